package confabclient

import (
	"strings"
	"testing"

	pb "example.com/confabclient/confabv1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestSendReceiveAcknowledge(t *testing.T) {
	conn := startServer(t)
	register(t, conn, "alice")
	register(t, conn, "bob")
	alice := login(t, conn, "alice")
	bob := login(t, conn, "bob")
	stream := subscribe(t, bob, &pb.SubscribeRequest{})
	if replayed, end := backlog(t, stream); len(replayed) != 0 || end.LastSeq != 0 {
		t.Fatalf("a new inbox replayed %v, BacklogEnd %v", replayed, end)
	}

	send := &pb.SendMessageRequest{To: "bob", Body: "hello from Go", MessageId: "go-1"}
	sent, err := alice.Chat.SendMessage(alice.Authorized(within(t)), send)
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if sent.Status != pb.DeliveryStatus_DELIVERY_STATUS_DELIVERED || sent.Duplicate || sent.Seq == 0 {
		t.Fatalf("SendMessage answered %v", sent)
	}
	got := next(t, stream, "alice's message", func(e *pb.Event) bool { return e.GetMessage() != nil }).GetMessage()
	if got.From != "alice" || got.Body != send.Body || got.MessageId != "go-1" || got.Seq != sent.Seq ||
		got.SentAtMs <= 0 {
		t.Fatalf("bob got %v for %v (seq %d)", got, send, sent.Seq)
	}

	// The same message id again: the server keeps one copy and says so.
	again, err := alice.Chat.SendMessage(alice.Authorized(within(t)), send)
	if err != nil || !again.Duplicate || again.Seq != sent.Seq {
		t.Fatalf("resending go-1: %v, %v", again, err)
	}

	// Not acknowledged yet: a new Subscribe replaces the stream (which ends with status OK and no
	// SessionEnded) and replays the message.
	replacement := subscribe(t, bob, &pb.SubscribeRequest{})
	for _, event := range rest(t, stream) {
		if event.GetSessionEnded() != nil {
			t.Fatalf("a replaced stream said %v", event)
		}
	}
	replayed, end := backlog(t, replacement)
	if len(replayed) != 1 || replayed[0].MessageId != "go-1" || end.LastSeq != sent.Seq {
		t.Fatalf("before the ack, Subscribe replayed %v, BacklogEnd %v", replayed, end)
	}

	// Acknowledged with a heartbeat: the next Subscribe replays nothing.
	if _, err := bob.Chat.Heartbeat(bob.Authorized(within(t)), &pb.HeartbeatRequest{AckSeq: got.Seq}); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if replayed, _ := backlog(t, subscribe(t, bob, &pb.SubscribeRequest{})); len(replayed) != 0 {
		t.Fatalf("after the ack, Subscribe replayed %v", replayed)
	}
}

func TestBadRequestsAreRefused(t *testing.T) {
	conn := startServer(t)
	register(t, conn, "alice")
	register(t, conn, "bob")
	alice := login(t, conn, "alice")
	ctx := alice.Authorized(within(t))

	// Malformed input: INVALID_ARGUMENT, with a BadRequest detail naming the field.
	for _, c := range []struct {
		req   *pb.SendMessageRequest
		field string
	}{
		{&pb.SendMessageRequest{To: "", Body: "x", MessageId: "go-2"}, "to"},
		{&pb.SendMessageRequest{To: "alice", Body: "x", MessageId: "go-3"}, "to"},
		{&pb.SendMessageRequest{To: "bob", Body: "", MessageId: "go-4"}, "body"},
		{&pb.SendMessageRequest{To: "bob", Body: "x", MessageId: ""}, "message_id"},
		{&pb.SendMessageRequest{To: "bob", Body: "x", MessageId: strings.Repeat("i", 65)}, "message_id"},
	} {
		_, err := alice.Chat.SendMessage(ctx, c.req)
		if got := violatedFields(t, err, codes.InvalidArgument); len(got) != 1 || got[0] != c.field {
			t.Errorf("SendMessage(%v): fields %v, want [%s]", c.req, got, c.field)
		}
	}
	_, err := pb.NewAuthClient(conn).Register(within(t), &pb.RegisterRequest{Username: "no spaces", Password: password})
	if got := violatedFields(t, err, codes.InvalidArgument); len(got) != 1 || got[0] != "username" {
		t.Errorf("registering %q: fields %v", "no spaces", got)
	}

	// The other refusals carry their code and a sentence for a person.
	_, err = alice.Chat.SendMessage(ctx, &pb.SendMessageRequest{To: "nobody", Body: "x", MessageId: "go-5"})
	if s := status.Convert(err); s.Code() != codes.NotFound || !strings.Contains(s.Message(), "nobody") {
		t.Errorf("to an unknown user: %v", err)
	}
	_, err = alice.Chat.ListOnline(within(t), &pb.ListOnlineRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListOnline without a token: %v", err)
	}
	_, err = Login(within(t), conn, "bob", "not bob's password")
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("a wrong password: %v", err)
	}
}

// violatedFields checks that err has the code `want` and returns the fields its BadRequest
// detail names.
func violatedFields(t *testing.T, err error, want codes.Code) []string {
	t.Helper()
	s := status.Convert(err)
	if s.Code() != want {
		t.Errorf("got %v, want %v", err, want)
		return nil
	}
	var fields []string
	for _, detail := range s.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range bad.FieldViolations {
				fields = append(fields, v.Field)
			}
		}
	}
	return fields
}

func TestPresenceSingleAndBatched(t *testing.T) {
	conn := startServer(t)
	for _, name := range []string{"alice", "bob", "carol"} {
		register(t, conn, name)
	}
	single := subscribe(t, login(t, conn, "alice"), &pb.SubscribeRequest{})
	batched := subscribe(t, login(t, conn, "carol"), &pb.SubscribeRequest{PresenceBatches: true})
	backlog(t, single)
	backlog(t, batched)

	bob := login(t, conn, "bob")
	bobs := subscribe(t, bob, &pb.SubscribeRequest{})
	backlog(t, bobs)
	expectPresence(t, single, batched, pb.Presence_PRESENCE_ONLINE)

	// Logging out ends bob's stream with SessionEnded{LOGGED_OUT}, then status OK.
	if _, err := bob.Chat.Logout(bob.Authorized(within(t)), &pb.LogoutRequest{}); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	ended := next(t, bobs, "SessionEnded", func(e *pb.Event) bool { return e.GetSessionEnded() != nil })
	if reason := ended.GetSessionEnded().Reason; reason != pb.SessionEndReason_SESSION_END_REASON_LOGGED_OUT {
		t.Fatalf("bob's session ended with %v", reason)
	}
	if after := rest(t, bobs); len(after) != 0 {
		t.Fatalf("after SessionEnded the stream went on: %v", after)
	}
	expectPresence(t, single, batched, pb.Presence_PRESENCE_OFFLINE)
}

// expectPresence waits for bob's change to `want`: a `presence` event on `single`, a
// `presence_batch` on `batched`, and never the other shape on either.
func expectPresence(t *testing.T, single, batched *Events, want pb.Presence) {
	t.Helper()
	bobs := func(changes []*pb.PresenceChanged) (states []pb.Presence) {
		for _, c := range changes {
			if c.GetUser() == "bob" {
				states = append(states, c.GetPresence())
			}
		}
		return states
	}
	one := next(t, single, "bob's presence", func(e *pb.Event) bool {
		if e.GetPresenceBatch() != nil {
			t.Fatalf("a stream without presence_batches got %v", e)
		}
		return len(bobs([]*pb.PresenceChanged{e.GetPresence()})) > 0
	}).GetPresence()
	if one.Presence != want {
		t.Fatalf("bob is %v, want %v", one.Presence, want)
	}
	batch := next(t, batched, "a batch with bob", func(e *pb.Event) bool {
		if e.GetPresence() != nil {
			t.Fatalf("a stream with presence_batches got a single %v", e)
		}
		return len(bobs(e.GetPresenceBatch().GetChanges())) > 0
	}).GetPresenceBatch()
	if got := bobs(batch.Changes); len(got) != 1 || got[0] != want {
		t.Fatalf("the batch says bob is %v, want [%v]", got, want)
	}
}
