package audio_test

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/inference/audio"
)

// The fixtures are 2.5 s of a 440 Hz tone at 16 kHz, mono, made with
// ffmpeg (its encoders: pcm_s16le, libmp3lame, flac, libopus, aac):
//
//	S='sine=frequency=440:sample_rate=16000:duration=2.5'
//	ffmpeg -f lavfi -i "$S" -ac 1 -c:a pcm_s16le speech.wav   # and so on for each
//
// ffprobe reads 2.500 (wav, flac, m4a), 2.5065 (ogg), 2.508 (webm) and
// 2.592 s (mp3: the encoder's padding frames).
var fixtures = map[string]struct {
	format string
	want   time.Duration
}{
	"speech.wav":  {audio.WAV, 2500 * time.Millisecond},
	"speech.mp3":  {audio.MP3, 2592 * time.Millisecond},
	"speech.flac": {audio.FLAC, 2500 * time.Millisecond},
	"speech.ogg":  {audio.OGG, 2500 * time.Millisecond},
	"speech.webm": {audio.WebM, 2508 * time.Millisecond},
	"speech.m4a":  {audio.MP4, 2500 * time.Millisecond},
}

func TestProbeFixtures(t *testing.T) {
	for name, f := range fixtures {
		data, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		info, err := audio.Probe(bytes.NewReader(data), int64(len(data)))
		require.NoError(t, err, name)
		require.Equal(t, f.format, info.Format, name)
		require.InDelta(t, f.want.Seconds(), info.Duration.Seconds(), 0.06, name)
	}
}

// Empty, foreign and truncated uploads are refused with their errors.
func TestProbeRefuses(t *testing.T) {
	for _, bad := range [][]byte{nil, {}, []byte("hello"), []byte("%PDF-1.7 not audio"), []byte(strings.Repeat("\x00", 1000))} {
		_, err := audio.Probe(bytes.NewReader(bad), int64(len(bad)))
		require.ErrorIs(t, err, audio.ErrUnsupported, "%q", bad)
	}
	for name := range fixtures {
		data, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		for _, cut := range []int{16, 60} {
			_, err := audio.Probe(bytes.NewReader(data[:cut]), int64(cut))
			require.ErrorIs(t, err, audio.ErrUnreadable, "%s cut at %d", name, cut)
		}
	}
}

// probeAlloc probes data and returns what it allocated.
func probeAlloc(data []byte) (audio.Info, error, uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	info, err := audio.Probe(bytes.NewReader(data), int64(len(data)))
	runtime.ReadMemStats(&after)
	return info, err, after.TotalAlloc - before.TotalAlloc
}

// allocBound is what a probe may allocate: a little more than the file.
func allocBound(data []byte) uint64 { return 32<<20 + 4*uint64(len(data)) }

// Files that declare chunks far larger than themselves are refused
// without allocating what they declare (go-audio/wav's decoder would
// allocate 800 MB for the first).
func TestProbeAllocatesNoMoreThanTheFile(t *testing.T) {
	for _, bomb := range []string{
		"RIFF0000WAVE0000\x10\x00\x00\x000000000000000000LIST \x00\x000INFOISFT\x0e",
		"RIFF\xc68\x01\x00WAVEfmt \x00\x00\x00}\x00\x00\x02\x00\x10\x00LIST\x1a\x00\x00\x00INFOISFTI",
		"RIFF\xff\xff\xff\xffWAVEfmt \xf0\xff\xff\xff\x01\x00\x01\x00\x80>\x00\x00\x00}\x00\x00\x02\x00\x10\x00",
		"RIFF\xff\xff\xff\xffWAVEsmpl\xf0\xff\xff\xff0000",
		"ID30000000",                     // an ID3v2 tag of 100 MB, as go-mp3 reads its size
		"\x1aE\xdf\xa3\x8100\x85\x12000", // an EBML element of 36 MB
	} {
		_, err, alloc := probeAlloc([]byte(bomb))
		require.Error(t, err, "%q", bomb)
		require.Less(t, alloc, allocBound([]byte(bomb)), "%q allocated %d bytes", bomb, alloc)
	}
}

// FuzzProbe: any input is refused or read, never a panic, never more
// allocated than a little over the file's size.
//
//	go test ./inference/audio -run '^$' -fuzz FuzzProbe -fuzztime 5m
func FuzzProbe(f *testing.F) {
	for name := range fixtures {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data[:min(len(data), 512)])
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err, alloc := probeAlloc(data)
		if err == nil {
			require.Positive(t, info.Duration)
		}
		if alloc > allocBound(data) {
			t.Fatalf("%d bytes allocated for %d bytes of input", alloc, len(data))
		}
	})
}
