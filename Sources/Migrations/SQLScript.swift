/// Splits a SQL file into statements, as psql would send them.
///
/// postgres-nio speaks only the extended query protocol, which takes one
/// statement at a time, so a migration file is cut at top-level semicolons.
/// Quotes ('…', E'…', "…"), dollar quotes ($tag$…$tag$) and comments (--, nested
/// /* */) are respected. Each statement keeps its offset in the file so a
/// server error position maps back to a line and column of the file.
struct SQLScript {
    struct Statement: Equatable {
        let text: String
        /// Offset of the statement's first character, in Unicode scalars.
        let offset: Int
    }

    let statements: [Statement]
    private let scalars: [Unicode.Scalar]

    init(_ sql: String) {
        let scalars = Array(sql.unicodeScalars)
        self.scalars = scalars
        self.statements = Self.split(scalars)
    }

    /// Line and column (both 1-based) of a scalar offset in the file.
    func location(ofOffset offset: Int) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for scalar in scalars.prefix(offset) {
            if scalar == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return (line, column)
    }

    private static func isIdentifierScalar(_ s: Unicode.Scalar) -> Bool {
        s == "_" || s.properties.isAlphabetic || ("0"..."9").contains(s)
    }

    private static func split(_ s: [Unicode.Scalar]) -> [Statement] {
        var statements: [Statement] = []
        var hasCode = false
        var codeStart = 0
        var i = 0
        let n = s.count

        func finish(at end: Int) {
            if hasCode {
                var last = end
                while last > codeStart, s[last - 1].properties.isWhitespace { last -= 1 }
                var text = String.UnicodeScalarView()
                text.append(contentsOf: s[codeStart..<last])
                statements.append(Statement(text: String(text), offset: codeStart))
            }
            hasCode = false
        }
        func markCode(_ position: Int) {
            if !hasCode {
                hasCode = true
                codeStart = position
            }
        }

        while i < n {
            let c = s[i]
            let next: Unicode.Scalar? = i + 1 < n ? s[i + 1] : nil
            if c == "-", next == "-" {
                while i < n, s[i] != "\n" { i += 1 }
                continue
            }
            if c == "/", next == "*" {
                var depth = 0
                while i < n {
                    if s[i] == "/", i + 1 < n, s[i + 1] == "*" {
                        depth += 1
                        i += 2
                    } else if s[i] == "*", i + 1 < n, s[i + 1] == "/" {
                        depth -= 1
                        i += 2
                        if depth == 0 { break }
                    } else {
                        i += 1
                    }
                }
                continue
            }
            if c == ";" {
                finish(at: i)
                i += 1
                continue
            }
            if c.properties.isWhitespace {
                i += 1
                continue
            }
            markCode(i)
            if c == "'" || c == "\"" {
                // '…' and "…" end at an undoubled quote; E'…' also honours backslashes.
                let escapes = c == "'" && i > 0 && (s[i - 1] == "E" || s[i - 1] == "e")
                    && (i < 2 || !isIdentifierScalar(s[i - 2]))
                i = endOfQuoted(s, openingAt: i, backslashEscapes: escapes)
                continue
            }
            if c == "$", i == 0 || !isIdentifierScalar(s[i - 1]), let tagEnd = dollarTagEnd(s, from: i) {
                let tag = Array(s[i...tagEnd])
                i = tagEnd + 1
                while i < n {
                    if s[i] == "$", i + tag.count <= n, Array(s[i..<(i + tag.count)]) == tag {
                        i += tag.count
                        break
                    }
                    i += 1
                }
                continue
            }
            i += 1
        }
        finish(at: n)
        return statements
    }

    /// The index just past the quoted text that opens at `i`.
    private static func endOfQuoted(_ s: [Unicode.Scalar], openingAt start: Int, backslashEscapes: Bool) -> Int {
        let quote = s[start]
        var i = start + 1
        while i < s.count {
            if backslashEscapes, s[i] == "\\" {
                i += 2
            } else if s[i] == quote {
                if i + 1 < s.count, s[i + 1] == quote {
                    i += 2
                } else {
                    return i + 1
                }
            } else {
                i += 1
            }
        }
        return s.count
    }

    /// The index of the closing `$` of a dollar-quote tag opening at `i`
    /// (`$$` or `$name$`), or nil when `$` starts something else.
    private static func dollarTagEnd(_ s: [Unicode.Scalar], from i: Int) -> Int? {
        var j = i + 1
        while j < s.count {
            let c = s[j]
            if c == "$" { return j }
            let isStart = c == "_" || c.properties.isAlphabetic
            let isDigit = ("0"..."9").contains(c)
            if j == i + 1 ? !isStart : !(isStart || isDigit) { return nil }
            j += 1
        }
        return nil
    }
}
