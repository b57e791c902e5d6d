package inference

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// The hand-written JSON fast paths list their fields by hand; these tests
// fill every exported field of each hot type, by reflection, so that a
// field added to a type and forgotten by an encoder, a decoder or a
// custom MarshalJSON fails here instead of being dropped silently.

// fill sets every exported field reachable from v to a random non-zero
// value. A Message gets either Content alone or Parts, with Content their
// texts joined by newlines, as decoding makes it (its JSON form holds one
// of them).
func fill(v reflect.Value, r *rand.Rand, depth int) {
	if m, ok := v.Addr().Interface().(*Message); ok {
		fillStruct(v, r, depth)
		if r.IntN(2) == 0 {
			m.Parts = nil
		} else {
			texts := make([]string, len(m.Parts))
			for i, p := range m.Parts {
				texts[i] = p.Text
			}
			m.Content = strings.Join(texts, "\n")
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		fillStruct(v, r, depth)
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d é\"\n", r.IntN(1000)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(1 + r.Int64N(1<<40))
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		v.SetUint(1 + r.Uint64N(1<<40))
	case reflect.Float64:
		v.SetFloat(float64(1+r.IntN(1000)) / 8)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), r, depth+1)
		v.Set(p)
	case reflect.Slice:
		if v.Type() == reflect.TypeFor[json.RawMessage]() {
			raws := []string{`{"a":[1,2,{"b":null}]}`, `[1,"x"]`, `"auto"`, `42`, `true`}
			v.SetBytes([]byte(raws[r.IntN(len(raws))]))
			return
		}
		n := 1 + r.IntN(2)
		if depth > 3 {
			n = 1
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(s.Index(i), r, depth+1)
		}
		v.Set(s)
	default:
		panic(fmt.Sprintf("fill: no rule for %s", v.Type()))
	}
}

func fillStruct(v reflect.Value, r *rand.Rand, depth int) {
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
			fill(v.Field(i), r, depth+1)
		}
	}
}

// filled returns a T with every field filled.
func filled[T any](r *rand.Rand) *T {
	v := new(T)
	fill(reflect.ValueOf(v).Elem(), r, 0)
	return v
}

// roundTrips checks that encoding/json keeps every field of v: a custom
// MarshalJSON or UnmarshalJSON that forgets one fails.
func roundTrips[T any](t *testing.T, v *T) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	back := new(T)
	if err := json.Unmarshal(b, back); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if !reflect.DeepEqual(v, back) {
		t.Fatalf("encoding/json loses a field of %T:\n have %#v\n back %#v\n json %s", v, v, back, b)
	}
	return b
}

func TestFastPathsCoverEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 300 {
		req := filled[ChatRequest](r)
		want := roundTrips(t, req)
		got, err := appendRequest(nil, req)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("request %d: the fast encoder disagrees with encoding/json:\n got %s (%v)\nwant %s", i, got, err, want)
		}
		dec, ok := parseChatRequestFast(want)
		if !ok {
			t.Fatalf("request %d: the fast decoder gave up on a well-formed request: %s", i, want)
		}
		if !reflect.DeepEqual(dec, req) {
			t.Fatalf("request %d: the fast decoder loses a field:\n got %#v\nwant %#v\njson %s", i, dec, req, want)
		}

		resp := filled[ChatResponse](r)
		want = roundTrips(t, resp)
		if got := resp.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("response %d: the fast encoder disagrees with encoding/json:\n got %s\nwant %s", i, got, want)
		}

		c := filled[ChatChunk](r)
		want = roundTrips(t, c)
		if got := c.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: the fast encoder disagrees with encoding/json:\n got %s\nwant %s", i, got, want)
		}
		dc, ok := decodeChunkFast(want)
		if !ok {
			t.Fatalf("chunk %d: the fast decoder gave up on a well-formed chunk: %s", i, want)
		}
		if !reflect.DeepEqual(dc, c) {
			t.Fatalf("chunk %d: the fast decoder loses a field:\n got %#v\nwant %#v\njson %s", i, dc, c, want)
		}
	}
}
