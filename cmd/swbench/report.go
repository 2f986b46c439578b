//go:build linux

package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Result is what one run measured. Pointer fields are nil when the metric
// does not apply (count frames on socket.io, server figures without a
// PID) and print as n/a.
type Result struct {
	Target   string  `json:"target"`
	Clients  int     `json:"clients"`
	Emits    int     `json:"emits"`
	Rate     float64 `json:"rate"`
	Inflight int     `json:"inflight"`
	Payload  int     `json:"payload"`
	Channel  string  `json:"channel,omitempty"`
	// Nodes is how many nodes the clients were spread over.
	Nodes int `json:"nodes"`

	// Connect phase.
	ConnectSeconds  float64  `json:"connect_s"`
	CountAllSeconds *float64 `json:"count_all_s"`
	DialRetries     int64    `json:"dial_retries"`
	CountFramesMax  *int64   `json:"count_frames_max"`
	CountFramesMean *float64 `json:"count_frames_mean"`
	Visitors        *int64   `json:"visitors"`

	// Deliveries.
	Expected        int64  `json:"expected"`
	Delivered       int64  `json:"delivered"`
	Lost            int64  `json:"lost"`
	ClientsMissing  int64  `json:"clients_missing"`
	Duplicates      int64  `json:"duplicates"`
	OutOfOrder      int64  `json:"out_of_order"`
	OrderMismatch   int64  `json:"order_mismatch"`
	Malformed       int64  `json:"malformed"`
	Disconnected    int64  `json:"disconnected"`
	EmitErrors      int64  `json:"emit_errors"`
	TimedOut        bool   `json:"timed_out"`
	MinRecipients   int64  `json:"min_recipients"`
	FirstDisconnect string `json:"first_disconnect,omitempty"`

	LatencyUS       Latency `json:"latency_us"`
	NegativeLatency int64   `json:"negative_latency"`
	// EmitCallUS is how long the publish calls took, from their start
	// until the server acknowledged them.
	EmitCallUS       Latency `json:"emit_call_us"`
	PublishSeconds   float64 `json:"publish_s"`
	EmitsPerSec      float64 `json:"emits_per_s"`
	DeliverSeconds   float64 `json:"deliver_s"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`

	// Server process, with a PID.
	ServerRSSBeforeKB    *int64   `json:"server_rss_before_kb"`
	ServerRSSConnectedKB *int64   `json:"server_rss_connected_kb"`
	ServerRSSAfterKB     *int64   `json:"server_rss_after_kb"`
	RSSPerConnBytes      *float64 `json:"rss_per_conn_bytes"`
	ServerCPUSeconds     *float64 `json:"server_cpu_s"`
	CPUPerDeliveryUS     *float64 `json:"cpu_per_delivery_us"`

	// LoadCPUSeconds is what swbench itself used, to tell whether the
	// generator rather than the server was the bottleneck.
	LoadCPUSeconds float64 `json:"load_cpu_s"`
	Failure        string  `json:"failure,omitempty"`
}

// Latency holds delivery latency percentiles in microseconds: receipt
// time minus the start of the publish call.
type Latency struct {
	P50 int32 `json:"p50"`
	P90 int32 `json:"p90"`
	P99 int32 `json:"p99"`
	Max int32 `json:"max"`
}

// Verify returns an error naming every way the run lost, duplicated or
// reordered a message, or nil.
func (r Result) Verify() error {
	var bad []string
	add := func(n int64, what string) {
		if n > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Lost, fmt.Sprintf("lost (of %d expected; %d clients missed messages)", r.Expected, r.ClientsMissing))
	add(r.Duplicates, "duplicated")
	add(r.OutOfOrder, "out of order")
	add(r.OrderMismatch, "clients saw another order than the first client")
	add(r.Malformed, "malformed message frames")
	add(r.Disconnected, "clients disconnected by the server")
	add(r.EmitErrors, "emits failed")
	if r.TimedOut {
		bad = append(bad, "timed out waiting for deliveries")
	}
	if len(bad) == 0 {
		return nil
	}
	return errors.New(strings.Join(bad, ", "))
}

// tally fills the delivery figures of r from the clients' records; st is
// nil for an idle run.
func tally(r *Result, conns []*conn, emits int, st *emitStats) {
	var all []int32
	if emits > 0 {
		all = make([]int32, 0, r.Expected)
	}
	var (
		lastDelivery int64
		ref          []int32
		rank         = make([]int32, emits)
		byStart      = make([]int32, emits)
		byEnd        = make([]int32, emits)
	)
	if st != nil {
		for i := range emits {
			byStart[i], byEnd[i] = int32(i), int32(i)
		}
		slices.SortFunc(byStart, func(a, b int32) int { return cmp.Compare(st.start[a], st.start[b]) })
		slices.SortFunc(byEnd, func(a, b int32) int { return cmp.Compare(st.end[a], st.end[b]) })
	}
	for _, c := range conns {
		if c == nil {
			continue
		}
		r.Delivered += int64(c.got)
		r.Duplicates += int64(c.dups)
		r.Malformed += int64(c.bad)
		r.NegativeLatency += int64(c.negative)
		if c.got < emits {
			r.ClientsMissing++
		}
		if c.err != nil {
			r.Disconnected++
			if r.FirstDisconnect == "" {
				r.FirstDisconnect = c.err.Error()
			}
		}
		lastDelivery = max(lastDelivery, c.last)
		for _, us := range c.lat {
			if us != 0 {
				all = append(all, us)
			}
		}
		if st != nil {
			r.OutOfOrder += int64(reordered(c.order, rank, byStart, byEnd, st))
		}
		if len(c.order) == emits {
			if ref == nil {
				ref = c.order
			} else if !slices.Equal(ref, c.order) {
				r.OrderMismatch++
			}
		}
	}
	r.Lost = r.Expected - r.Delivered
	if len(all) > 0 {
		slices.Sort(all)
		at := func(q float64) int32 { return all[min(len(all)-1, int(q*float64(len(all))))] }
		r.LatencyUS = Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: all[len(all)-1]}
	}
	if st != nil {
		var calls []int32
		for i := range emits {
			if st.start[i] != 0 && st.end[i] >= st.start[i] {
				calls = append(calls, int32(min((st.end[i]-st.start[i])/1000, math.MaxInt32)))
			}
		}
		if len(calls) > 0 {
			slices.Sort(calls)
			at := func(q float64) int32 { return calls[min(len(calls)-1, int(q*float64(len(calls))))] }
			r.EmitCallUS = Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: calls[len(calls)-1]}
		}
		if r.PublishSeconds > 0 {
			r.EmitsPerSec = float64(emits) / r.PublishSeconds
		}
		if lastDelivery > st.firstStart && st.firstStart > 0 {
			r.DeliverSeconds = float64(lastDelivery-st.firstStart) / 1e9
			r.DeliveriesPerSec = float64(r.Expected) / r.DeliverSeconds
		}
	}
	if r.ServerCPUSeconds != nil && r.Delivered > 0 {
		r.CPUPerDeliveryUS = ptr(*r.ServerCPUSeconds / float64(r.Delivered) * 1e6)
	}
	if err := r.Verify(); err != nil {
		r.Failure = err.Error()
	}
}

// reordered counts the messages in order (seqs in arrival order) that
// arrived before a message whose publish call had returned before theirs
// started: the only order a server owes its clients when emits overlap.
// With one emit in flight that is plain seq order. rank is scratch space.
func reordered(order, rank, byStart, byEnd []int32, st *emitStats) int {
	for i := range rank {
		rank[i] = -1
	}
	for pos, seq := range order {
		rank[seq] = int32(pos)
	}
	n, p := 0, 0
	maxRank := int32(-1)
	for _, j := range byStart {
		for p < len(byEnd) && st.end[byEnd[p]] < st.start[j] {
			maxRank = max(maxRank, rank[byEnd[p]])
			p++
		}
		if rank[j] >= 0 && rank[j] < maxRank {
			n++
		}
	}
	return n
}

// print writes the human-readable summary.
func (r Result) print(w io.Writer) {
	na := "n/a"
	f := func(p *float64, format string) string {
		if p == nil {
			return na
		}
		return fmt.Sprintf(format, *p)
	}
	i := func(p *int64) string {
		if p == nil {
			return na
		}
		return fmt.Sprint(*p)
	}
	mb := func(p *int64) string {
		if p == nil {
			return na
		}
		return fmt.Sprintf("%.1f MiB", float64(*p)/1024)
	}
	fmt.Fprintf(w, "target %s: %d clients, %d emits, inflight %d, rate %g/s, payload %d B\n", r.Target, r.Clients, r.Emits, r.Inflight, r.Rate, r.Payload)
	if r.Nodes > 1 {
		fmt.Fprintf(w, "  spread over       %d nodes (server figures: all of them together)\n", r.Nodes)
	}
	fmt.Fprintf(w, "  connect all       %.3fs (%d dial retries)\n", r.ConnectSeconds, r.DialRetries)
	fmt.Fprintf(w, "  connect+count all %s\n", f(r.CountAllSeconds, "%.3fs"))
	fmt.Fprintf(w, "  count frames/client during connect: max %s, mean %s\n", i(r.CountFramesMax), f(r.CountFramesMean, "%.1f"))
	if r.Visitors != nil {
		fmt.Fprintf(w, "  visitors          %d, told to every client\n", *r.Visitors)
	}
	if r.Emits > 0 {
		fmt.Fprintf(w, "  delivered         %d/%d (lost %d, duplicates %d, out of order %d, order mismatch %d, disconnected %d, emit errors %d)\n",
			r.Delivered, r.Expected, r.Lost, r.Duplicates, r.OutOfOrder, r.OrderMismatch, r.Disconnected, r.EmitErrors)
		fmt.Fprintf(w, "  latency           p50 %s  p90 %s  p99 %s  max %s\n", us(r.LatencyUS.P50), us(r.LatencyUS.P90), us(r.LatencyUS.P99), us(r.LatencyUS.Max))
		fmt.Fprintf(w, "  publish           %.3fs (%.0f emits/s, min recipients %d)\n", r.PublishSeconds, r.EmitsPerSec, r.MinRecipients)
		fmt.Fprintf(w, "  emit call         p50 %s  p90 %s  p99 %s  max %s\n", us(r.EmitCallUS.P50), us(r.EmitCallUS.P90), us(r.EmitCallUS.P99), us(r.EmitCallUS.Max))
		fmt.Fprintf(w, "  deliveries/s      %.0f (%d in %.3fs, first publish to last delivery)\n", r.DeliveriesPerSec, r.Expected, r.DeliverSeconds)
	}
	fmt.Fprintf(w, "  server RSS        before %s, connected %s, after %s; %s per connection\n",
		mb(r.ServerRSSBeforeKB), mb(r.ServerRSSConnectedKB), mb(r.ServerRSSAfterKB), f(r.RSSPerConnBytes, "%.0f B"))
	if r.Emits > 0 {
		fmt.Fprintf(w, "  server CPU        %s during the emit phase, %s per delivery\n", f(r.ServerCPUSeconds, "%.2fs"), f(r.CPUPerDeliveryUS, "%.2f µs"))
	}
	fmt.Fprintf(w, "  swbench CPU       %.2fs\n", r.LoadCPUSeconds)
}

func us(v int32) string {
	if v >= 10000 {
		return fmt.Sprintf("%.1fms", float64(v)/1000)
	}
	return fmt.Sprintf("%dµs", v)
}
