// A Sarama consumer group against `kafka-trace-harness broker`: the Go
// client the original demo's API service could have used. Two members of
// one group on a topic of two partitions: the first gets its first record
// within FIRST_RECORD of subscribing, the second its partition within
// SECOND_MEMBER of subscribing (about one heartbeat on Kafka), and every
// record produced afterwards reaches the member that holds its partition.
//
// Built in GOPATH mode against Debian's Sarama package (see
// tests/interop/sarama_client.py, which builds and runs it).
//
// Usage: sarama_group BOOTSTRAP TOPIC
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const (
	records      = 5
	firstRecord  = 5 * time.Second
	secondMember = 10 * time.Second
	deadline     = 20 * time.Second
)

// member is one consumer-group member, consuming on goroutines of its own.
type member struct {
	name       string
	subscribed time.Time
	group      sarama.ConsumerGroup
	cancel     context.CancelFunc
	done       chan struct{}

	mu          sync.Mutex
	claims      map[int32]bool
	assignedAt  time.Time
	firstRecord time.Time
	got         map[string]int32 // value -> partition
	err         error
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = map[int32]bool{}
	for _, partitions := range s.Claims() {
		for _, p := range partitions {
			m.claims[p] = true
		}
	}
	if len(m.claims) > 0 && m.assignedAt.IsZero() {
		m.assignedAt = time.Now()
	}
	return nil
}

func (m *member) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		m.mu.Lock()
		if m.firstRecord.IsZero() {
			m.firstRecord = time.Now()
		}
		m.got[string(msg.Value)] = msg.Partition
		m.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	// Sarama's default protocol version predates consumer groups.
	c.Version = sarama.V2_0_0_0
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Return.Errors = true
	c.Producer.Return.Successes = true
	c.Producer.Partitioner = sarama.NewManualPartitioner
	return c
}

func join(name, bootstrap, group, topic string) (*member, error) {
	g, err := sarama.NewConsumerGroup([]string{bootstrap}, group, config())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{name: name, group: g, cancel: cancel, done: make(chan struct{}),
		got: map[string]int32{}, subscribed: time.Now()}
	go func() {
		for err := range g.Errors() {
			// A commit between a rebalance's join and sync is refused, as
			// on Kafka, and Sarama reports it here: the member rejoins.
			if strings.Contains(err.Error(), sarama.ErrRebalanceInProgress.Error()) {
				fmt.Printf("%s: %v\n", name, err)
				continue
			}
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
		}
	}()
	go func() {
		defer close(m.done)
		// Each Consume is one session; a rebalance ends it.
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, m); err != nil && ctx.Err() == nil {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
				return
			}
		}
	}()
	return m, nil
}

func (m *member) close() {
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(deadline):
	}
	_ = m.group.Close()
}

func (m *member) state() (map[int32]bool, map[string]int32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	claims := map[int32]bool{}
	for p := range m.claims {
		claims[p] = true
	}
	got := map[string]int32{}
	for v, p := range m.got {
		got[v] = p
	}
	return claims, got, m.err
}

func waitUntil(what string, done func() (bool, error)) error {
	end := time.Now().Add(deadline)
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s: not within %s", what, deadline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func produce(bootstrap, topic string, partition int32, values []string) error {
	p, err := sarama.NewSyncProducer([]string{bootstrap}, config())
	if err != nil {
		return err
	}
	defer p.Close()
	for _, v := range values {
		msg := &sarama.ProducerMessage{Topic: topic, Partition: partition, Value: sarama.StringEncoder(v)}
		if _, _, err := p.SendMessage(msg); err != nil {
			return err
		}
	}
	return nil
}

func run(bootstrap, topic string) error {
	group := topic + "-group"
	var before []string
	for i := 0; i < records; i++ {
		before = append(before, fmt.Sprintf("before-%d", i))
	}
	if err := produce(bootstrap, topic, 0, before); err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	first, err := join("first", bootstrap, group, topic)
	if err != nil {
		return err
	}
	defer first.close()
	err = waitUntil("the first member reads the records", func() (bool, error) {
		_, got, err := first.state()
		return len(got) >= records, err
	})
	if err != nil {
		return err
	}
	waited := first.firstRecord.Sub(first.subscribed)
	fmt.Printf("sarama: first record %.3f s after subscribing\n", waited.Seconds())
	if waited > firstRecord {
		return fmt.Errorf("first record only after %s", waited)
	}

	second, err := join("second", bootstrap, group, topic)
	if err != nil {
		return err
	}
	defer second.close()
	err = waitUntil("each member holds one partition", func() (bool, error) {
		a, _, err := first.state()
		if err != nil {
			return false, err
		}
		b, _, err := second.state()
		return len(a) == 1 && len(b) == 1 && a[0] != b[0], err
	})
	if err != nil {
		return err
	}
	waited = second.assignedAt.Sub(second.subscribed)
	fmt.Printf("sarama second member: assigned %.3f s after subscribing\n", waited.Seconds())
	if waited > secondMember {
		return fmt.Errorf("second member assigned only after %s", waited)
	}

	sent := map[string]int32{}
	for _, p := range []int32{0, 1} {
		var values []string
		for i := 0; i < records; i++ {
			v := fmt.Sprintf("p%d-%d", p, i)
			values = append(values, v)
			sent[v] = p
		}
		if err := produce(bootstrap, topic, p, values); err != nil {
			return fmt.Errorf("producing: %w", err)
		}
	}
	return waitUntil("every record reaches the member holding its partition", func() (bool, error) {
		for value, partition := range sent {
			found := false
			for _, m := range []*member{first, second} {
				claims, got, err := m.state()
				if err != nil {
					return false, err
				}
				if p, ok := got[value]; ok {
					if !claims[p] {
						return false, fmt.Errorf("%s read %s of partition %d, holds %v", m.name, value, p, claims)
					}
					found = p == partition
				}
			}
			if !found {
				return false, nil
			}
		}
		return true, nil
	})
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sarama_group BOOTSTRAP TOPIC")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintf(os.Stderr, "sarama: FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("sarama: ok")
}
