package dashboard

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// BenchmarkSample is what the sampler costs each second.
func BenchmarkSample(b *testing.B) {
	dash := bare(newHub(b, "n"))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		dash.sample(now)
	}
}

// BenchmarkState is one poll of /state.json on a busy member: 10,000
// connections on 1,000 channels here, two other members with 1,000
// channels each, and the chart's 600 points.
func BenchmarkState(b *testing.B) {
	h := newHub(b, "n")
	for i := range 10_000 {
		connect(b, h, "ch"+strconv.Itoa(i%1000))
	}
	for _, node := range []string{"m2", "m3"} {
		c := hub.Counts{Node: node, Total: 10_000, Channels: map[string]int64{}}
		for i := range 1000 {
			c.Channels["ch"+strconv.Itoa(i)] = 10
		}
		h.HandleCounts(c)
	}
	dash := bare(h)
	now := time.Now()
	for i := range ratePoints + 1 {
		dash.sample(now.Add(time.Duration(i) * time.Second))
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		dash.ServeHTTP(w, httptest.NewRequest("GET", "/state.json", nil))
		size = w.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes/doc")
}
