package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Results is everything a run measured: results.json.
type Results struct {
	Started time.Time `json:"started"`
	Command string    `json:"command"`
	Quick   bool      `json:"quick"`
	Machine Machine   `json:"machine"`
	Method  []string  `json:"method"`
	Targets string    `json:"targets"` // "children" or the URLs
	// Redis is the Redis the servers used (absent from results.json
	// files written before it was recorded).
	Redis    RedisTopology `json:"redis"`
	Results  []*Result     `json:"results"`
	Failures []string      `json:"failures,omitempty"` // promises broken
	Duration float64       `json:"duration_s"`
}

// RedisTopology describes the Redis of a run.
type RedisTopology struct {
	// Topology is "single" (one Redis), "cluster" (Redis Cluster) or
	// "unknown" (--target: the servers' own Redis).
	Topology string `json:"topology"`
	// Masters is the number of masters of a cluster the bench started.
	Masters int `json:"masters,omitempty"`
	// Started: the bench started Redis as its child (else --redis named a
	// running one, or --target).
	Started bool `json:"started_by_bench"`
	// URL is --redis, its password hidden.
	URL string `json:"url,omitempty"`
}

// String describes the topology for the report; "" when not recorded.
func (t RedisTopology) String() string {
	switch {
	case t.Topology == "unknown":
		return "not known (--target: the servers' own)"
	case t.Topology == "cluster" && t.Started:
		return fmt.Sprintf("Redis Cluster of %d masters, no replicas, started by the bench (sharded Pub/Sub)", t.Masters)
	case t.Topology == "cluster":
		return fmt.Sprintf("a running Redis Cluster, not started by the bench (`--redis %s`; sharded Pub/Sub)", t.URL)
	case t.Topology == "single" && t.Started:
		return "one redis-server, started by the bench"
	case t.Topology == "single":
		return fmt.Sprintf("a running Redis, not started by the bench (`--redis %s`)", t.URL)
	}
	return ""
}

// children names a Redis the bench started, in the list of its children.
func (t RedisTopology) children() string {
	if t.Topology == "cluster" {
		return fmt.Sprintf("%d-node Redis Cluster", t.Masters)
	}
	return "redis-server"
}

// Result is one scenario on one transport, at one load.
type Result struct {
	Scenario    string  `json:"scenario"`
	Transport   string  `json:"transport"`
	Load        string  `json:"load"` // e.g. "1000 subscribers × 40 msg/s"
	Subscribers int     `json:"subscribers"`
	Instances   int     `json:"instances"`
	Rate        float64 `json:"publish_rate"` // messages per second, scheduled
	MeasureSec  float64 `json:"measure_s"`

	Latency     Latency     `json:"latency"`
	Correctness Correctness `json:"correctness"`

	// DeliveriesPerSec is the deliveries of the messages scheduled in the
	// measurement window, per second of it: the offered load when nothing
	// is lost. ReceivedPerSec is what the clients received during the
	// window: the throughput, lower when the system fell behind.
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	ReceivedPerSec   float64 `json:"received_per_s,omitempty"`
	// Server cost over the measurement window, from /proc of each
	// instance and of Redis (percent of one core); nil when unknown
	// (--target).
	ServerCPUPct         *float64 `json:"server_cpu_pct,omitempty"`
	RedisCPUPct          *float64 `json:"redis_cpu_pct,omitempty"`
	LoadCPUPct           float64  `json:"load_cpu_pct"`
	ServerCPUPerDelivery *float64 `json:"server_cpu_us_per_delivery,omitempty"` // per delivery received in the window
	// Bytes on the wire per delivered message, counted at the clients'
	// sockets (both directions); nil when not counted.
	WirePerDelivery *float64 `json:"wire_bytes_per_delivery,omitempty"`

	// Connections.
	ConnectPerSec   float64  `json:"connects_per_s,omitempty"`
	RSSPerConnKiB   *float64 `json:"server_rss_kib_per_conn,omitempty"`
	IdleCPUPct      *float64 `json:"idle_server_cpu_pct,omitempty"`
	IdleWirePerHour *float64 `json:"idle_wire_bytes_per_conn_hour,omitempty"`
	Reconnects      int64    `json:"reconnects,omitempty"`
	ResumedAll      *bool    `json:"resumed_all,omitempty"`
	ResumeMaxSec    *float64 `json:"resume_max_s,omitempty"`
	ResumeP99Sec    *float64 `json:"resume_p99_s,omitempty"` // of the clients that reconnected
	SlowClients     int      `json:"slow_clients,omitempty"`
	SlowLatency     *Latency `json:"slow_latency,omitempty"`
	Notes           []string `json:"notes,omitempty"`
	Error           string   `json:"error,omitempty"`
}

func ptr[T any](v T) *T { return &v }

func (r *Results) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadResults reads a results.json.
func ReadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
