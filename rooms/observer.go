package rooms

// Observer is told what the hub does, for metrics. Its methods are called
// on the delivery path and must be cheap and must not block.
type Observer interface {
	// Delivered counts events queued for connections.
	Delivered(n int)
	// Dropped counts volatile events dropped for slow connections.
	Dropped(n int)
	// SlowConsumer counts connections closed because they fell behind.
	SlowConsumer()
	// Resumed counts resumes by outcome: "replayed" or "reset".
	Resumed(outcome string)
}

type nopObserver struct{}

func (nopObserver) Delivered(int)  {}
func (nopObserver) Dropped(int)    {}
func (nopObserver) SlowConsumer()  {}
func (nopObserver) Resumed(string) {}
