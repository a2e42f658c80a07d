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
	ch, _ := m.subscribe()
	return ch
}

// subscribe is Events with a cancel func that ends the subscription, for
// a command that waits for its own events (hotplug.go, jobs.go): without
// it, every such wait would leave a queue growing until the connection
// ends. The channel closes after cancel.
func (m *Monitor) subscribe() (<-chan Event, func()) {
	s := &subscriber{out: make(chan Event), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	m.mu.Lock()
	if m.subs == nil { // already ended
		m.mu.Unlock()
		close(s.out)
		return s.out, func() {}
	}
	m.subs = append(m.subs, s)
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		s.deliver(m.quit)
	}()
	var once sync.Once
	return s.out, func() {
		once.Do(func() {
			m.mu.Lock()
			for i, x := range m.subs {
				if x == s {
					m.subs = append(m.subs[:i:i], m.subs[i+1:]...)
					break
				}
			}
			m.mu.Unlock()
			close(s.stop)
		})
	}
}

// subscriber is an unbounded queue in front of one Events channel.
type subscriber struct {
	out  chan Event
	wake chan struct{} // capacity 1: "queue or ended changed"
	stop chan struct{} // closed when the subscriber cancels (subscribe)

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
			case <-s.stop:
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
		case <-s.stop:
			return
		}
	}
}
