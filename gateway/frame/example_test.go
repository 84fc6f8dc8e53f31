package frame_test

import (
	"errors"
	"fmt"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/gateway/frame"
)

type printer struct{}

func (printer) OnMessage(op ws.OpCode, payload []byte) error {
	fmt.Printf("message %v %q\n", op == ws.OpText, payload)
	return nil
}

func (printer) OnControl(op ws.OpCode, payload []byte) error {
	fmt.Printf("control %#x %q\n", byte(op), payload)
	return nil
}

// A masked "Hi" text frame arrives in two reads, then a ping, then an
// unmasked frame, which closes the connection with 1002.
func ExampleParser_Feed() {
	var p frame.Parser
	defer p.Release()
	hi := []byte{0x81, 0x82, 1, 2, 3, 4, 'H' ^ 1, 'i' ^ 2}
	ping := []byte{0x89, 0x80, 0, 0, 0, 0}
	bad := []byte{0x81, 0x00}
	for _, read := range [][]byte{hi[:5], append(hi[5:], ping...), bad} {
		if err := p.Feed(read, nil, printer{}); err != nil {
			var ce *frame.CloseError
			if errors.As(err, &ce) {
				fmt.Println("close", ce.Code, ce.Reason)
			}
			break
		}
	}
	// Output:
	// message true "Hi"
	// control 0x9 ""
	// close 1002 unmasked_frame
}

func ExampleAppendClose() {
	fmt.Printf("%q\n", frame.AppendClose(nil, ws.StatusMessageTooBig, "too big"))
	// Output: "\x88\t\x03\xf1too big"
}
