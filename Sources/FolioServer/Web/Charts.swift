import Foundation

/// Charts drawn on the server as SVG: no script, no inline style (colours come
/// from the stylesheet's `c0`…`c7` classes, so dark mode restyles them). Each
/// has a `<title>` and sits beside a table of the same figures. Coordinates
/// are pixels computed in `Double`; the figures shown come from exact values.
enum Charts {
    struct Slice {
        var label: String
        /// The slice's share of the whole, 0...1, for drawing only.
        var share: Double
    }

    /// A donut of `slices` (largest first); a slice keeps its colour index, so the legend matches.
    static func donut(id: String, title: String, slices: [Slice]) -> String {
        let size = 160.0, radius = 70.0, inner = 44.0, centre = size / 2
        var svg = "<svg class=\"donut\" viewBox=\"0 0 \(Int(size)) \(Int(size))\" role=\"img\" aria-labelledby=\"\(id)-title\">"
        svg += "<title id=\"\(id)-title\">\(escape(title))</title>"
        let total = slices.reduce(0) { $0 + max($1.share, 0) }
        let drawn = slices.enumerated().filter { $0.element.share > 0 }
        if total <= 0 {
            svg += "<circle class=\"empty\" cx=\"\(centre)\" cy=\"\(centre)\" r=\"\(radius)\"/>"
        } else if drawn.count == 1, let only = drawn.first {
            // A whole circle: an arc from a point back to itself draws nothing.
            svg += "<circle class=\"c\(only.offset % 8)\" cx=\"\(centre)\" cy=\"\(centre)\" r=\"\(radius)\"><title>\(escape(only.element.label))</title></circle>"
        } else {
            var angle = -Double.pi / 2
            for (index, slice) in slices.enumerated() where slice.share > 0 {
                let sweep = max(slice.share, 0) / total * 2 * Double.pi
                let end = angle + sweep
                // Drawn in arcs of at most half a turn: a slice of nearly all of it (beside a sliver) would otherwise
                // end where it starts once rounded to the drawing's 0.01, and an arc from a point to itself draws nothing.
                var arcs = ""
                var from = angle
                while from < end - 1e-12 {
                    let to = min(from + Double.pi, end)
                    let (x, y) = point(centre, radius, to)
                    arcs += " A\(radius),\(radius) 0 0 1 \(f(x)),\(f(y))"
                    from = to
                }
                let (x1, y1) = point(centre, radius, angle)
                svg += "<path class=\"c\(index % 8)\" d=\"M\(centre),\(centre) L\(f(x1)),\(f(y1))\(arcs) Z\">"
                svg += "<title>\(escape(slice.label))</title></path>"
                angle = end
            }
        }
        svg += "<circle class=\"hole\" cx=\"\(centre)\" cy=\"\(centre)\" r=\"\(inner)\"/></svg>"
        return svg
    }

    struct Point {
        var label: String
        var value: Double
    }

    /// A line of values over time with its lowest and highest value marked.
    static func line(id: String, title: String, points: [Point], lowLabel: String, highLabel: String) -> String {
        let width = 640.0, height = 200.0, pad = 8.0
        var svg = "<svg class=\"line-chart\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-labelledby=\"\(id)-title\">"
        svg += "<title id=\"\(id)-title\">\(escape(title))</title>"
        guard let low = points.map(\.value).min(), let high = points.map(\.value).max() else {
            return svg + "<text x=\"20\" y=\"100\" class=\"muted\">No history yet</text></svg>"
        }
        let span = high - low > 0 ? high - low : max(abs(high), 1)
        let step = points.count > 1 ? (width - 2 * pad) / Double(points.count - 1) : 0
        var coordinates = points.enumerated().map { index, point in
            (pad + Double(index) * step, height - pad - (point.value - (high - low > 0 ? low : low - span / 2)) / span * (height - 2 * pad))
        }
        // One value (an account's first day): a level line to it, rather than a lone dot at the chart's left edge.
        if coordinates.count == 1 { coordinates = [coordinates[0], (width - pad, coordinates[0].1)] }
        let path = coordinates.enumerated().map { index, xy in "\(index == 0 ? "M" : "L")\(f(xy.0)),\(f(xy.1))" }.joined(separator: " ")
        svg += "<path class=\"area\" d=\"\(path) L\(f(coordinates.last!.0)),\(height - pad) L\(f(coordinates[0].0)),\(height - pad) Z\"/>"
        svg += "<path class=\"stroke\" d=\"\(path)\"/>"
        if let last = coordinates.last { svg += "<circle class=\"dot\" cx=\"\(f(last.0))\" cy=\"\(f(last.1))\" r=\"4\"/>" }
        svg += "<desc>From \(escape(points.first!.label)) to \(escape(points.last!.label)); low \(escape(lowLabel)), high \(escape(highLabel)).</desc>"
        return svg + "</svg>"
    }

    /// One holding's drift: the band around its target shaded, the target a
    /// mark, and a bar from the target to where the holding is now.
    static func driftBar(label: String, current: Double, target: Double, band: Double, outside: Bool, scale: Double) -> String {
        let width = 320.0, height = 22.0
        func x(_ percent: Double) -> Double { min(width, max(0, percent / max(scale, 1) * width)) }
        var svg = "<svg class=\"drift\(outside ? " outside" : "")\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escape(label))\">"
        svg += "<rect class=\"band\" x=\"\(f(x(target - band)))\" y=\"2\" width=\"\(f(x(target + band) - x(target - band)))\" height=\"18\" rx=\"3\"/>"
        let (from, to) = (min(x(current), x(target)), max(x(current), x(target)))
        svg += "<rect class=\"bar\" x=\"\(f(from))\" y=\"7\" width=\"\(f(max(to - from, 1.5)))\" height=\"8\" rx=\"2\"/>"
        svg += "<line class=\"target\" x1=\"\(f(x(target)))\" x2=\"\(f(x(target)))\" y1=\"0\" y2=\"\(Int(height))\"/>"
        return svg + "</svg>"
    }

    static func point(_ centre: Double, _ radius: Double, _ angle: Double) -> (Double, Double) {
        (centre + radius * cos(angle), centre + radius * sin(angle))
    }

    static func f(_ value: Double) -> String {
        String(format: "%.2f", value)
    }

    static func escape(_ text: String) -> String {
        ScalarHTMLEscaping.escape(text)
    }
}
