// Package confabclient is the Go client of docs/clients.md: a thin layer over the stubs that
// protoc generates from proto/chat.proto into the package confabv1. The generated code is not
// kept in the repository; scripts/test.sh generates it with the commands docs/clients.md shows
// and runs chat_test.go against a real `confab serve`.
package confabclient

import (
	"context"

	pb "example.com/confabclient/confabv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Dial opens a plaintext channel, as for a server on loopback. grpc-go 1.33 (Debian 12) spells
// it this way; from 1.63 on it is grpc.NewClient(addr, grpc.WithTransportCredentials(
// insecure.NewCredentials())).
func Dial(addr string) (*grpc.ClientConn, error) {
	return grpc.Dial(addr, grpc.WithInsecure())
}

// Session is a logged-in user: the Chat stub and the token that every Chat call carries.
type Session struct {
	Name  string
	Chat  pb.ChatClient
	token string
}

// Login logs in without a peer listener (peer_port 0), so nobody can be granted this user's
// address; messages go through the server.
func Login(ctx context.Context, conn *grpc.ClientConn, name, password string) (*Session, error) {
	login, err := pb.NewAuthClient(conn).Login(ctx, &pb.LoginRequest{Username: name, Password: password})
	if err != nil {
		return nil, err
	}
	return &Session{Name: login.Username, Chat: pb.NewChatClient(conn), token: login.Token}, nil
}

// Authorized returns ctx carrying the session's token, as every Chat call needs.
func (s *Session) Authorized(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token)
}

// Events is a Subscribe stream read on a goroutine of its own: a client must never stop reading
// its stream, or the server ends the session as TOO_SLOW once the stream's queue is full.
type Events struct {
	// C yields the events in order and is closed when the stream ends.
	C <-chan *pb.Event
	// err is why the stream ended (io.EOF for status OK); written before C is closed.
	err    error
	cancel context.CancelFunc
}

// Subscribe opens the session's event stream.
func (s *Session) Subscribe(req *pb.SubscribeRequest) (*Events, error) {
	ctx, cancel := context.WithCancel(s.Authorized(context.Background()))
	stream, err := s.Chat.Subscribe(ctx, req)
	if err != nil {
		cancel()
		return nil, err
	}
	c := make(chan *pb.Event, 256)
	events := &Events{C: c, cancel: cancel}
	go func() {
		defer close(c)
		for {
			event, err := stream.Recv()
			if err != nil {
				events.err = err
				return
			}
			select {
			case c <- event:
			case <-ctx.Done():
				events.err = ctx.Err()
				return
			}
		}
	}()
	return events, nil
}

// Err is why the stream ended: io.EOF when the server closed it with status OK. Valid once C is
// closed.
func (e *Events) Err() error { return e.err }

// Close cancels the stream; C is closed once its reader has seen the cancellation.
func (e *Events) Close() { e.cancel() }
