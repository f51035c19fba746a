package confabclient

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	pb "example.com/confabclient/confabv1"
	"google.golang.org/grpc"
)

// patience is how long any awaited thing may take.
const patience = 10 * time.Second

const password = "correct horse battery"

// startServer runs `confab serve` (the binary at $CONFAB_BIN) on a free loopback port with a
// data directory of its own, and returns a channel to it. The server is killed when the test
// ends.
func startServer(t *testing.T) *grpc.ClientConn {
	t.Helper()
	bin := os.Getenv("CONFAB_BIN")
	if bin == "" {
		t.Fatal("CONFAB_BIN must name the confab binary")
	}
	// The server wants its data directory private; t.TempDir() makes it 0755 under a usual umask.
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--bench-fast-hash")
	cmd.Env = append(os.Environ(), "RUST_LOG=warn")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	// The first line says where it listens; the rest is drained so the server never blocks on it.
	first := make(chan string, 1)
	go func() {
		lines := bufio.NewReader(stdout)
		line, err := lines.ReadString('\n')
		if err != nil {
			line = fmt.Sprintf("(no line: %v)", err)
		}
		first <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, lines)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(patience):
		t.Fatalf("confab serve printed nothing within %v", patience)
	}
	const prefix = "confab listening on "
	if !strings.HasPrefix(line, prefix) {
		t.Fatalf("confab serve's first line is %q, not %q…", line, prefix)
	}
	conn, err := Dial(strings.TrimPrefix(line, prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// within returns a context for one call that must be answered in time.
func within(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

func register(t *testing.T, conn *grpc.ClientConn, name string) {
	t.Helper()
	r, err := pb.NewAuthClient(conn).Register(within(t),
		&pb.RegisterRequest{Username: name, Password: password})
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	if r.Username != name {
		t.Fatalf("registered %q as %q", name, r.Username)
	}
}

func login(t *testing.T, conn *grpc.ClientConn, name string) *Session {
	t.Helper()
	s, err := Login(within(t), conn, name, password)
	if err != nil {
		t.Fatalf("logging in %s: %v", name, err)
	}
	return s
}

func subscribe(t *testing.T, s *Session, req *pb.SubscribeRequest) *Events {
	t.Helper()
	events, err := s.Subscribe(req)
	if err != nil {
		t.Fatalf("%s: Subscribe: %v", s.Name, err)
	}
	t.Cleanup(events.Close)
	return events
}

// next returns the next event that `want` accepts, passing over the others.
func next(t *testing.T, events *Events, what string, want func(*pb.Event) bool) *pb.Event {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case event, ok := <-events.C:
			if !ok {
				t.Fatalf("the stream ended (%v) before %s", events.Err(), what)
			}
			if want(event) {
				return event
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, patience)
		}
	}
}

// backlog reads the stream up to BacklogEnd and returns the replayed messages and BacklogEnd.
func backlog(t *testing.T, events *Events) ([]*pb.DirectMessage, *pb.BacklogEnd) {
	t.Helper()
	var replayed []*pb.DirectMessage
	end := next(t, events, "BacklogEnd", func(e *pb.Event) bool {
		if m := e.GetMessage(); m != nil {
			replayed = append(replayed, m)
		}
		return e.GetBacklogEnd() != nil
	})
	return replayed, end.GetBacklogEnd()
}

// rest reads the stream to its end, which must be status OK, and returns what came before.
func rest(t *testing.T, events *Events) []*pb.Event {
	t.Helper()
	var seen []*pb.Event
	deadline := time.After(patience)
	for {
		select {
		case event, ok := <-events.C:
			if !ok {
				if events.Err() != io.EOF {
					t.Fatalf("the stream ended with %v, not status OK", events.Err())
				}
				return seen
			}
			seen = append(seen, event)
		case <-deadline:
			t.Fatalf("the stream did not end within %v", patience)
		}
	}
}
