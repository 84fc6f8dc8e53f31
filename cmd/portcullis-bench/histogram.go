package main

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// histogram is one Prometheus histogram read from a scrape: cumulative
// counts by upper bound, ascending.
type histogram struct {
	bounds []float64
	counts []float64
	count  float64
}

// quantile returns the upper bound of the first bucket holding quantile q
// (a bound, not an interpolation: the histogram knows no finer).
func (h histogram) quantile(q float64) float64 {
	for i, c := range h.counts {
		if c >= q*h.count {
			return h.bounds[i]
		}
	}
	return math.Inf(1)
}

// within returns the share of observations at or under bound b, which
// must be one of the buckets' bounds.
func (h histogram) within(b float64) float64 {
	for i, ub := range h.bounds {
		if ub == b {
			return h.counts[i] / h.count
		}
	}
	return math.NaN()
}

// publishHistogram scrapes the gateway's GET /metrics (served without the
// key to a loopback peer) for portcullis_publish_duration_seconds.
func (g *gateway) publishHistogram() (histogram, error) {
	const name = "portcullis_publish_duration_seconds"
	resp, err := g.client.Get(g.adminURL + "/metrics")
	if err != nil {
		return histogram{}, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return histogram{}, fmt.Errorf("scrape: HTTP %d", resp.StatusCode)
	}
	var h histogram
	type bucket struct{ ub, n float64 }
	var bs []bucket
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, name+`_bucket{le="`):
			rest := strings.TrimPrefix(line, name+`_bucket{le="`)
			le, val, ok := strings.Cut(rest, `"} `)
			if !ok {
				continue
			}
			ub, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
			n, err2 := strconv.ParseFloat(val, 64)
			if err1 == nil && err2 == nil {
				bs = append(bs, bucket{ub, n})
			}
		case strings.HasPrefix(line, name+"_count "):
			h.count, _ = strconv.ParseFloat(strings.TrimPrefix(line, name+"_count "), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return histogram{}, fmt.Errorf("scrape: %w", err)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].ub < bs[j].ub })
	for _, b := range bs {
		h.bounds = append(h.bounds, b.ub)
		h.counts = append(h.counts, b.n)
	}
	return h, nil
}
