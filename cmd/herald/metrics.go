package main

import (
	"context"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics. Per-connection and per-write
// events come through wire.Observer; the hub's and the Redis broker's own
// counters are read when Prometheus scrapes, so the delivery path pays
// nothing per subscriber.
type metrics struct {
	reg       *prometheus.Registry
	conns     *prometheus.GaugeVec
	opened    *prometheus.CounterVec
	closed    *prometheus.CounterVec
	written   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	rejected  *prometheus.CounterVec
	published *prometheus.CounterVec

	// byTransport caches each transport's delivery series (string →
	// *deliverySeries): Wrote runs once per write, and a vector's
	// WithLabelValues hashes and looks up its labels each time (2.5 % of
	// the server's CPU at 5,000 subscribers flat out).
	byTransport sync.Map
}

type deliverySeries struct {
	written prometheus.Counter
	latency prometheus.Observer
}

var _ wire.Observer = (*metrics)(nil)

func newMetrics(broker notify.Broker) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_connections", Help: "Open client connections, by transport (and HTTP version).",
		}, []string{"transport"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_connections_opened_total", Help: "Client connections opened, by transport.",
		}, []string{"transport"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_connections_closed_total", Help: "Client connections closed, by transport and reason (closed, lagged, shutdown, …).",
		}, []string{"transport", "reason"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_messages_delivered_total", Help: "Messages written to clients, by transport.",
		}, []string{"transport"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_delivery_latency_seconds",
			Help:    "Time from publish to the write that delivered it, for the oldest message of each write (the write's worst case), by transport.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"transport"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_rejected_total", Help: "Refused connections, commands and REST calls, by transport (rest for the REST API) and error code (unauthorized, forbidden, too_large, too_many_connections, rate_limited, …).",
		}, []string{"transport", "code"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_messages_published_total", Help: "Publish attempts on this instance, by result (ok, error).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.conns, m.opened, m.closed, m.written, m.latency, m.rejected, m.published,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if rb, ok := broker.(*redisbroker.Broker); ok {
		m.watchRedis(rb)
	}
	return m
}

// watchHub registers the hub's counters.
func (m *metrics) watchHub(hub *notify.Hub) {
	hubStat := func(f func(notify.HubStats) float64) func() float64 {
		return func() float64 { return f(hub.Stats()) }
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_hub_deliveries_total", Help: "Messages queued to local subscribers."},
			hubStat(func(s notify.HubStats) float64 { return float64(s.Delivered) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_queue_overflows_total", Help: "Connections closed because their queue overflowed (also in herald_connections_dropped_total)."},
			hubStat(func(s notify.HubStats) float64 { return float64(s.Dropped[notify.DropQueueOverflow]) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_channels", Help: "Channels with a broker subscription on this instance."},
			hubStat(func(s notify.HubStats) float64 { return float64(s.Channels) })),
		dropCollector{hub},
	)
}

// dropCollector exports the hub's drop counters, one series per reason,
// read at scrape time.
type dropCollector struct{ hub *notify.Hub }

var dropDesc = prometheus.NewDesc("herald_connections_dropped_total",
	"Connections the server closed, by reason: queue_overflow and write_timeout (the client was told lagged), heartbeat_timeout (no answer to a heartbeat: a dead peer), reconnect_advice (a drain's advice written), shutdown, unavailable (the broker failed), token_expired (the token expired without a refresh).",
	[]string{"reason"}, nil)

func (dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dropDesc }

func (c dropCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.hub.Stats()
	for _, r := range notify.DropReasons() {
		ch <- prometheus.MustNewConstMetric(dropDesc, prometheus.CounterValue, float64(st.Dropped[r]), r.String())
	}
}

// watchRedis registers the Redis broker's counters.
func (m *metrics) watchRedis(rb *redisbroker.Broker) {
	redisStat := func(f func(redisbroker.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(rb.Stats())) }
	}
	{
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_redis_errors_total", Help: "Failed Redis calls."},
				redisStat(func(s redisbroker.Stats) uint64 { return s.Errors })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_redis_resubscriptions_total", Help: "Pub/Sub resubscriptions after reconnects."},
				redisStat(func(s redisbroker.Stats) uint64 { return s.Reconnects })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_redis_recovered_messages_total", Help: "Messages recovered from streams after a Pub/Sub reconnect."},
				redisStat(func(s redisbroker.Stats) uint64 { return s.CatchUps })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_redis_history_lost_total", Help: "Catch-ups that found the history trimmed (clients were sent gap notices)."},
				redisStat(func(s redisbroker.Stats) uint64 { return s.Lost })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_redis_malformed_messages_total", Help: "Pub/Sub messages on Herald's channels that were not a Herald publish, dropped (logged at most every 10 s)."},
				redisStat(func(s redisbroker.Stats) uint64 { return s.Malformed })),
		)
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_pubsub_canary_age_seconds", Help: "Redis Pub/Sub canary: on the worst of this instance's Pub/Sub connections, time since the newest canary that came back was sent; above --pubsub-canary-timeout /readyz answers 503."},
				func() float64 { return rb.Canary().Age.Seconds() }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_pubsub_canary_late_total", Help: "Times a Redis Pub/Sub connection's canary turned late (the connection stopped delivering, or the instance was too starved to read it)."},
				func() float64 { return float64(rb.Canary().LateTotal) }),
		)
	}
}

func (m *metrics) Opened(transport string) {
	m.conns.WithLabelValues(transport).Inc()
	m.opened.WithLabelValues(transport).Inc()
}

func (m *metrics) Closed(transport string, reason error) {
	m.conns.WithLabelValues(transport).Dec()
	code := notify.ErrClosed.Code
	if reason != nil {
		code = notify.ErrorEnvelope(reason, "").Code
	}
	m.closed.WithLabelValues(transport, code).Inc()
}

func (m *metrics) Wrote(transport string, n int, oldest time.Time) {
	d, ok := m.byTransport.Load(transport)
	if !ok {
		d, _ = m.byTransport.LoadOrStore(transport, &deliverySeries{
			written: m.written.WithLabelValues(transport),
			latency: m.latency.WithLabelValues(transport),
		})
	}
	series := d.(*deliverySeries)
	series.written.Add(float64(n))
	series.latency.Observe(max(time.Since(oldest), 0).Seconds())
}

func (m *metrics) Rejected(transport, code string) {
	m.rejected.WithLabelValues(transport, code).Inc()
}

// countingBroker counts publishes; everything else is the embedded
// broker's.
type countingBroker struct {
	notify.Broker
	m *metrics
}

func (b countingBroker) Publish(ctx context.Context, p notify.Publication) (notify.ID, error) {
	id, err := b.Broker.Publish(ctx, p)
	b.count(1, err)
	return id, err
}

// PublishBatch counts the published prefix as ok and the rest, if the
// batch failed, as errors.
func (b countingBroker) PublishBatch(ctx context.Context, ps []notify.Publication) ([]notify.ID, error) {
	ids, err := b.Broker.PublishBatch(ctx, ps)
	b.count(len(ids), nil)
	if err != nil {
		b.count(len(ps)-len(ids), err)
	}
	return ids, err
}

func (b countingBroker) count(n int, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	b.m.published.WithLabelValues(result).Add(float64(n))
}
