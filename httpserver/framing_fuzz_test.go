package httpserver

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// chunkConn hands out its data in reads of the sizes in sizes (cycled).
type chunkConn struct {
	net.Conn
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[c.i%len(c.sizes)])+1)
		c.i++
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

// What IngressListener hands Go's server is what the client sent, up to a
// refused head, which is replaced by refusedHead and followed by nothing;
// however the bytes are split, and without panics or endless loops.
func FuzzIngressFraming(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nanything\r\n\r\n",
		"\n\n\r\n\r\n",
	} {
		f.Add([]byte(s), []byte{0, 3, 200}, []byte{1, 7})
	}
	f.Fuzz(func(t *testing.T, in, sizes, reads []byte) {
		c := &framingConn{Conn: &chunkConn{data: bytes.Clone(in), sizes: sizes}}
		var out []byte
		for i := 0; ; i++ {
			n := 4096
			if len(reads) > 0 {
				n = int(reads[i%len(reads)]) + 1
			}
			p := make([]byte, n)
			k, err := c.Read(p)
			out = append(out, p[:k]...)
			if err != nil {
				break
			}
			if i > 10*len(in)+100 {
				t.Fatal("no end")
			}
		}
		if c.state == framingRefused {
			i := len(out) - len(refusedHead)
			if !bytes.HasSuffix(out, refusedHead) || i > len(in) || !bytes.Equal(out[:i], in[:i]) {
				t.Fatalf("refused: got %q from %q", out, in)
			}
			return
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("got %q from %q", out, in)
		}
	})
}
