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
	"github.com/perceptron-cloud/perceptron/inference/audio/audiotest"
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

// overflowing returns the fixtures patched to declare durations whose
// nanoseconds overflow 64 bits: a FLAC file of 18,446,744,075 samples at
// 1 Hz, an M4A whose movie header says as many units at timescale 1, and
// an Ogg Opus file whose last granule is (2^64 + 4.8e13) / 1e9 samples
// past its pre-skip. They were read as 1.0 to 1.3 s.
func overflowing(t testing.TB) map[string][]byte {
	read := func(name string) []byte {
		data, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		return data
	}
	return map[string][]byte{
		audio.FLAC: audiotest.FLACDeclaring(read("speech.flac"), audiotest.OverflowSamples, 1),
		audio.MP4:  audiotest.MP4Declaring(read("speech.m4a"), audiotest.OverflowSamples, 1),
		audio.OGG:  audiotest.OggDeclaring(read("speech.ogg"), audiotest.OverflowGranule),
	}
}

// Declared durations past 24 hours are refused with ErrTooLong, however
// large their figures; durations just under it are read exactly, and the
// patched files are otherwise valid (read as declared when the
// declaration is plausible).
func TestProbeRefusesOverflowingDurations(t *testing.T) {
	for format, data := range overflowing(t) {
		info, err := audio.Probe(bytes.NewReader(data), int64(len(data)))
		require.ErrorIs(t, err, audio.ErrTooLong, "%s read as %v", format, info.Duration)
		require.NotErrorIs(t, err, audio.ErrUnreadable, format)
		require.Equal(t, format, info.Format)
	}
	read := func(name string) []byte {
		data, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		return data
	}
	day := uint64(audio.MaxDuration / time.Second)
	for _, c := range []struct {
		name string
		data []byte
		want time.Duration
		err  error
	}{
		{"flac, a day at 1 Hz", audiotest.FLACDeclaring(read("speech.flac"), day, 1), audio.MaxDuration, nil},
		{"flac, a day and a sample at 1 Hz", audiotest.FLACDeclaring(read("speech.flac"), day+1, 1), 0, audio.ErrTooLong},
		{"flac, 3 samples at 2 Hz", audiotest.FLACDeclaring(read("speech.flac"), 3, 2), 1500 * time.Millisecond, nil},
		{"flac, 2^36-1 samples at 2^20-1 Hz", audiotest.FLACDeclaring(read("speech.flac"), 1<<36-1, 1<<20-1), 65536*time.Second + 62499105, nil},
		{"m4a, 10 s at 1000", audiotest.MP4Declaring(read("speech.m4a"), 10_000, 1000), 10 * time.Second, nil},
		{"m4a, 2^64-1 at 2^32-1", audiotest.MP4Declaring(read("speech.m4a"), 1<<64-1, 1<<32-1), 0, audio.ErrTooLong},
		{"ogg, 3 s", audiotest.OggDeclaring(read("speech.ogg"), 3*48000), 3 * time.Second, nil},
		{"ogg, 2^63 samples", audiotest.OggDeclaring(read("speech.ogg"), 1<<63), 0, audio.ErrTooLong},
	} {
		info, err := audio.Probe(bytes.NewReader(c.data), int64(len(c.data)))
		if c.err != nil {
			require.ErrorIs(t, err, c.err, c.name)
			continue
		}
		require.NoError(t, err, c.name)
		require.Equal(t, c.want, info.Duration, c.name)
	}
}

// FuzzProbe: any input is refused or read, never a panic, never more
// allocated than a little over the file's size, never a duration
// outside (0, MaxDuration]. Its seeds are the fixtures, their heads,
// and the files whose declared durations overflowed.
//
//	go test ./inference/audio -run '^$' -fuzz FuzzProbe -fuzztime 5m
func FuzzProbe(f *testing.F) {
	for name := range fixtures {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data[:min(len(data), 512)])
		f.Add(data)
	}
	for _, data := range overflowing(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err, alloc := probeAlloc(data)
		if err == nil {
			require.Positive(t, info.Duration)
			require.LessOrEqual(t, info.Duration, audio.MaxDuration)
		}
		if alloc > allocBound(data) {
			t.Fatalf("%d bytes allocated for %d bytes of input", alloc, len(data))
		}
	})
}
