import Store
import Translation

extension VideoRecord {
    init(object o: VideoObject, upstreamID: String, team: String, now: Int) {
        self.init(id: o.id, upstreamID: upstreamID, team: team, model: o.model, prompt: o.prompt ?? "",
                  size: o.size, seconds: o.seconds, status: o.status.rawValue, progress: o.progress,
                  createdAt: o.createdAt, completedAt: o.completedAt, expiresAt: o.expiresAt,
                  errorCode: o.error?.code, errorMessage: o.error?.message,
                  videoURL: o.videoURL, watermarkedURL: o.watermarkedVideoURL, updatedAt: now)
    }

    var facts: VideoFacts {
        VideoFacts(veilID: id, model: model, size: size, seconds: seconds, prompt: prompt, createdAt: createdAt)
    }

    /// The stored state as Veil's object.
    var object: VideoObject {
        VideoObject(id: id, model: model, status: VideoStatus(rawValue: status) ?? .inProgress, progress: progress,
                    createdAt: createdAt, completedAt: completedAt, expiresAt: expiresAt, size: size, seconds: seconds,
                    prompt: prompt, error: errorCode.map { VideoError(code: $0, message: errorMessage ?? "") },
                    videoURL: videoURL, watermarkedVideoURL: watermarkedURL)
    }

    /// Takes a newer upstream state; the first completion time is kept.
    mutating func apply(_ o: VideoObject, now: Int) {
        status = o.status.rawValue
        progress = o.progress
        completedAt = completedAt ?? o.completedAt
        expiresAt = o.expiresAt
        errorCode = o.error?.code
        errorMessage = o.error?.message
        videoURL = o.videoURL
        watermarkedURL = o.watermarkedVideoURL
        if size == nil { size = o.size }
        if seconds == nil { seconds = o.seconds }
        updatedAt = now
    }
}
