package qemu

import (
	"sync"
	"time"
)

// Event is an asynchronous QMP event: SHUTDOWN, POWERDOWN, RESET, STOP,
// RESUME, …
type Event struct {
	Name string
	Data map[string]any
	Time time.Time // QEMU's timestamp
}

// Events returns a new subscription to the events that arrive from now on.
// Every subscriber sees every event, in order, without ever blocking QMP:
// a slow subscriber queues in memory. The channel closes after the last
// event once the connection ends (QEMU exited) or when the Monitor is
// closed.
func (m *Monitor) Events() <-chan Event {
	s := &subscriber{out: make(chan Event), wake: make(chan struct{}, 1)}
	m.mu.Lock()
	if m.subs == nil { // already ended
		m.mu.Unlock()
		close(s.out)
		return s.out
	}
	m.subs = append(m.subs, s)
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		s.deliver(m.quit)
	}()
	return s.out
}

// subscriber is an unbounded queue in front of one Events channel.
type subscriber struct {
	out  chan Event
	wake chan struct{} // capacity 1: "queue or ended changed"

	mu    sync.Mutex
	queue []Event
	ended bool
}

func (s *subscriber) push(e Event) {
	s.mu.Lock()
	s.queue = append(s.queue, e)
	s.mu.Unlock()
	s.signal()
}

func (s *subscriber) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.signal()
}

func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) deliver(quit <-chan struct{}) {
	defer close(s.out)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			ended := s.ended
			s.mu.Unlock()
			if ended {
				return
			}
			select {
			case <-s.wake:
				continue
			case <-quit:
				return
			}
		}
		e := s.queue[0]
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		select {
		case s.out <- e:
		case <-quit:
			return
		}
	}
}
