package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

// Series is one line of a percentile plot.
type Series struct {
	Label  string           `json:"label"`
	Points []loadtest.Point `json:"points"`
}

// Plot geometry, in SVG user units.
const (
	plotW, plotH           = 760, 440
	marginL, marginR       = 70, 20
	marginT, marginB       = 40, 110
	maxNines               = 4 // the x axis ends at 99.99 %
	legendRowH, legendColW = 18, 240
)

// palette is colour-blind friendly (Okabe-Ito).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"}

// PlotSVG draws latency against quantile: x is -log10(1-q) from 0 % to
// 99.99 % (so each "nine" gets the same width), y is latency on a log scale
// with decade grid lines. One polyline per series that has points; quantiles
// above 99.99 % (and the maximum) are left out.
func PlotSVG(title string, series []Series) []byte {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			if x, ok := nines(p.Quantile); ok && x <= maxNines && p.Latency > 0 {
				v := math.Log10(float64(p.Latency) / 1e3) // µs
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 3
	}
	lo, hi = math.Floor(lo), math.Ceil(hi)
	if hi <= lo {
		hi = lo + 1
	}
	iw, ih := float64(plotW-marginL-marginR), float64(plotH-marginT-marginB)
	px := func(x float64) float64 { return marginL + x/maxNines*iw }
	py := func(v float64) float64 { return marginT + ih - (v-lo)/(hi-lo)*ih }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
	// Grid and axis labels.
	for i := 0; i <= maxNines; i++ {
		x := px(float64(i))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, marginT, x, marginT+ih)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, marginT+ih+16, []string{"0%", "90%", "99%", "99.9%", "99.99%"}[i])
	}
	for v := lo; v <= hi; v++ {
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, y, marginL+iw, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y+4, esc(fmtLatency(time.Duration(math.Pow(10, v)*1e3))))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", marginL, marginT, iw, ih)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">quantile (log scale of 1-q)</text>`+"\n", marginL+iw/2, marginT+ih+34)
	fmt.Fprintf(&b, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">latency</text>`+"\n", marginT+ih/2, marginT+ih/2)
	// Lines and legend.
	for i, s := range series {
		color := palette[i%len(palette)]
		var pts bytes.Buffer
		for _, p := range s.Points {
			x, ok := nines(p.Quantile)
			if !ok || x > maxNines || p.Latency <= 0 {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(x), py(math.Log10(float64(p.Latency)/1e3)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, bytes.TrimSpace(pts.Bytes()))
		lx := float64(marginL + (i%3)*legendColW)
		ly := marginT + ih + 56 + float64(i/3*legendRowH)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", lx, ly-4, lx+22, ly-4, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+28, ly, esc(s.Label))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// nines maps quantile q to -log10(1-q): 0 for q=0, 2 for 99 %; q=1 has no
// place on the axis.
func nines(q float64) (float64, bool) {
	if q < 0 || q >= 1 || math.IsNaN(q) {
		return 0, false
	}
	return -math.Log10(1 - q), true
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
