/// Date math without Foundation's calendar or a time zone database: civil dates ↔ Unix time
/// (Howard Hinnant's days-from-civil), enough for the upstream's local-time strings and the
/// `se=` expiry of signed URLs.
public enum TimeMath {
    /// Days since 1970-01-01 of a proleptic Gregorian date (inputs already range-checked).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Reads `YYYY-MM-DD[ T]HH:MM:SS` at the start of `u`, returning the seconds since the epoch
    /// of that wall-clock time read as UTC, and how many bytes were consumed.
    static func parseWallClock(_ u: [UInt8]) -> (seconds: Int, consumed: Int)? {
        guard u.count >= 19 else { return nil }
        func num(_ a: Int, _ n: Int) -> Int? {
            var v = 0
            for k in a..<(a + n) {
                let c = u[k]
                guard c >= 0x30, c <= 0x39 else { return nil }
                v = v * 10 + Int(c - 0x30)
            }
            return v
        }
        guard u[4] == UInt8(ascii: "-"), u[7] == UInt8(ascii: "-"),
              u[10] == UInt8(ascii: " ") || u[10] == UInt8(ascii: "T") || u[10] == UInt8(ascii: "t"),
              u[13] == UInt8(ascii: ":"), u[16] == UInt8(ascii: ":"),
              let year = num(0, 4), let month = num(5, 2), let day = num(8, 2),
              let hour = num(11, 2), let minute = num(14, 2), let second = num(17, 2),
              (1...12).contains(month), day >= 1, day <= daysInMonth(year: year, month: month),
              hour <= 23, minute <= 59, second <= 60
        else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        return (days * 86_400 + hour * 3600 + minute * 60 + second, 19)
    }

    /// ISO 8601 / RFC 3339 timestamp (`2025-11-08T00:00:00Z`, optional fraction, `Z` or
    /// `±HH:MM`) → Unix seconds (fraction dropped). Nil for anything else.
    public static func parseISO8601(_ s: String) -> Int? {
        let u = Array(s.utf8)
        guard let (wall, consumed) = parseWallClock(u), u[10] != UInt8(ascii: " ") else { return nil }
        var i = consumed
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            let digitsStart = i
            while i < u.count, u[i] >= 0x30, u[i] <= 0x39, i - digitsStart < 12 { i += 1 }
            guard i > digitsStart else { return nil }
        }
        let rest = String(decoding: u[i...], as: UTF8.self)
        if rest == "Z" || rest == "z" { return wall }
        guard let off = parseOffsetLiteral(rest) else { return nil }
        return wall - off
    }

    /// `+08:00`, `-05:30`, `+0800`, `+08` → seconds east of UTC; within ±14h.
    static func parseOffsetLiteral(_ s: String) -> Int? {
        let u = Array(s.utf8)
        guard let sign = u.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else { return nil }
        var digits = Array(u.dropFirst())
        if digits.count == 5, digits[2] == UInt8(ascii: ":") { digits.remove(at: 2) }
        guard digits.count == 2 || digits.count == 4, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        let h = Int(digits[0] - 0x30) * 10 + Int(digits[1] - 0x30)
        let m = digits.count == 4 ? Int(digits[2] - 0x30) * 10 + Int(digits[3] - 0x30) : 0
        guard m <= 59, h * 60 + m <= 14 * 60 else { return nil }
        let total = h * 3600 + m * 60
        return sign == UInt8(ascii: "-") ? -total : total
    }
}

/// The upstream's `create_time` ("2025-11-06 16:27:24", local wall-clock time) → Unix seconds,
/// given the upstream's UTC offset (Shanghai: 28800). Nil when malformed or out of range.
public func parseLocalTime(_ s: String, utcOffsetSeconds: Int) -> Int? {
    let u = Array(s.trimmingASCIIWhitespace().utf8)
    guard u.count == 19, utcOffsetSeconds >= -14 * 3600, utcOffsetSeconds <= 14 * 3600,
          let (wall, _) = TimeMath.parseWallClock(u) else { return nil }
    return wall - utcOffsetSeconds
}

/// The fixed UTC offset of a zone name, for configuring how to read the upstream's local times.
///
/// Only zones without daylight saving time (for decades) are listed, because a single offset must
/// be right all year; DST zones (Europe/…, America/…) answer nil so config validation refuses
/// them rather than being silently wrong half the year. Also accepts `UTC`, `GMT`, `Z` and
/// literals `+08:00`, `-05:30`, `+0800`, `+08`, optionally prefixed `UTC`/`GMT`.
public func timeZoneOffsetSeconds(identifier: String) -> Int? {
    let id = identifier.trimmingASCIIWhitespace()
    let fixed: [String: Int] = [
        "UTC": 0, "Etc/UTC": 0, "GMT": 0, "Etc/GMT": 0, "Z": 0, "Zulu": 0, "UCT": 0, "Universal": 0,
        "Asia/Shanghai": 28_800, "Asia/Chongqing": 28_800, "Asia/Chungking": 28_800, "Asia/Harbin": 28_800,
        "PRC": 28_800, "Asia/Hong_Kong": 28_800, "Hongkong": 28_800, "Asia/Macau": 28_800,
        "Asia/Taipei": 28_800, "Asia/Singapore": 28_800, "Singapore": 28_800, "Asia/Kuala_Lumpur": 28_800,
        "Asia/Manila": 28_800, "Asia/Tokyo": 32_400, "Japan": 32_400, "Asia/Seoul": 32_400,
        "Asia/Kolkata": 19_800, "Asia/Calcutta": 19_800, "Asia/Dubai": 14_400,
    ]
    if let v = fixed[id] { return v }
    var lit = Substring(id)
    if lit.hasPrefix("UTC") || lit.hasPrefix("GMT") { lit = lit.dropFirst(3) }
    return TimeMath.parseOffsetLiteral(String(lit))
}
