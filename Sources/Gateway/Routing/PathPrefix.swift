extension Substring {
    /// Byte-wise prefix test for request paths. `Substring.hasPrefix` compares Characters
    /// (grapheme breaking, unspecialised: BENCHMARKS.md, fix 21); paths are bytes on the wire,
    /// so a UTF-8 prefix is the right question anyway.
    @inline(__always)
    func hasBytePrefix(_ prefix: String) -> Bool {
        // Contiguous bytes compared directly (the generic `starts(with:)` over UTF-8 views walks
        // index by index); the view comparison is the fallback.
        let fast = utf8.withContiguousStorageIfAvailable { p in
            prefix.utf8.withContiguousStorageIfAvailable { q in
                p.count >= q.count && UnsafeBufferPointer(rebasing: p[..<q.count]).elementsEqual(q)
            }
        }
        if let fast, let fast { return fast }
        return utf8.starts(with: prefix.utf8)
    }
}
