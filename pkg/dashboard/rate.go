package dashboard

import (
	"math"
	"strconv"
	"time"
)

// The chart of messages per second: one point per sampleInterval, the
// newest ratePoints of them (ten minutes).
const (
	sampleInterval = time.Second
	ratePoints     = 600
)

// rate keeps the messages per second between successive samples of the
// log's position, in a ring. The offset counts every message that enters
// the log, so on a cluster member, which delivers the whole shared log,
// it is the cluster's rate, and on a following standby the pair's.
type rate struct {
	last struct {
		at     time.Time
		epoch  string
		offset uint64
		ok     bool
	}
	at   [ratePoints]time.Time
	perS [ratePoints]float64 // NaN: unknown, the log changed epoch
	next int                 // where the next point goes
	n    int                 // points held
}

// add takes a sample of the log's position at now and records the rate
// since the one before. Across a change of epoch (a fork, a new log) the
// offsets do not measure messages: that point is a gap.
func (r *rate) add(now time.Time, epoch string, offset uint64) {
	if r.last.ok {
		v := math.NaN()
		if dt := now.Sub(r.last.at).Seconds(); dt > 0 && epoch == r.last.epoch && offset >= r.last.offset {
			v = float64(offset-r.last.offset) / dt
		}
		r.at[r.next], r.perS[r.next] = now, v
		r.next = (r.next + 1) % ratePoints
		r.n = min(r.n+1, ratePoints)
	}
	r.last.at, r.last.epoch, r.last.offset, r.last.ok = now, epoch, offset, true
}

// series returns the points held, oldest first.
func (r *rate) series() rateSeries {
	s := rateSeries{IntervalS: int(sampleInterval / time.Second), WindowS: int(ratePoints * sampleInterval / time.Second), TMS: make([]int64, r.n), PerS: make(rates, r.n)}
	first := (r.next - r.n + ratePoints) % ratePoints
	for i := range r.n {
		j := (first + i) % ratePoints
		s.TMS[i], s.PerS[i] = r.at[j].UnixMilli(), r.perS[j]
	}
	return s
}

// rateSeries is the chart's data: per_s[i] messages per second in the
// interval that ended at t_ms[i] (Unix milliseconds), null where unknown.
type rateSeries struct {
	IntervalS int     `json:"interval_s"`
	WindowS   int     `json:"window_s"`
	TMS       []int64 `json:"t_ms"`
	PerS      rates   `json:"per_s"`
}

// rates encodes as JSON numbers to two decimals, NaN as null.
type rates []float64

// MarshalJSON implements json.Marshaler.
func (v rates) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+6*len(v))
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			b = append(b, "null"...)
			continue
		}
		b = strconv.AppendFloat(b, math.Round(x*100)/100, 'f', -1, 64)
	}
	return append(b, ']'), nil
}
