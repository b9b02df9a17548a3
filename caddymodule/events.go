package caddymodule

// emitter emits Caddy events on behalf of a handler.
type emitter func(name string, data map[string]any)

func (z *zone) emit(name string, data map[string]any) {
	if e := z.emitter.Load(); e != nil {
		data["zone"] = z.name
		(*e)(name, data)
	}
}

func (z *zone) emitting() bool { return z.emitter.Load() != nil }

// recordAdmitted counts and announces a stream that took a slot.
func (z *zone) recordAdmitted(ref streamRef) {
	z.admittedCount.Add(1)
	z.admittedMetric.Inc()
	if z.emitting() {
		z.emit("stream_started", map[string]any{"stream_id": ref.id, "user": ref.key.User})
	}
}

// recordEnded counts and announces a stream that gave its slot back, and
// why.
func (z *zone) recordEnded(ref streamRef, cause string) {
	metrics.released.WithLabelValues(z.name, cause).Inc()
	if z.emitting() {
		z.emit("stream_ended", map[string]any{"stream_id": ref.id, "user": ref.key.User, "cause": cause})
	}
}

// recordDenied counts and announces a refused request.
func (z *zone) recordDenied(user, reason string, extra map[string]any) {
	z.deniedCount.Add(1)
	metrics.denied.WithLabelValues(z.name, reason).Inc()
	data := map[string]any{"user": user, "reason": reason}
	for k, v := range extra {
		data[k] = v
	}
	z.emit("stream_denied", data)
}
