package inference

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/inference/audio"
)

// The name sent upstream carries an extension of the format the file was
// read as, which OpenAI's API needs; a fitting one is kept.
func TestUploadName(t *testing.T) {
	for _, c := range []struct{ name, format, want string }{
		{"speech.wav", audio.WAV, "speech.wav"},
		{"", audio.WAV, "audio.wav"},
		{"blob", audio.WebM, "blob.webm"},
		{"note.M4A", audio.MP4, "note.M4A"},
		{"clip.mp4", audio.MP4, "clip.mp4"},
		{"voice.ogg", audio.MP3, "voice.ogg.mp3"},
		{`C:\Users\ada\memo.opus`, audio.OGG, "memo.opus"},
		{"../../etc/passwd", audio.FLAC, "passwd.flac"},
		{"/", audio.WAV, "audio.wav"},
	} {
		require.Equal(t, c.want, uploadName(c.name, c.format), "%q as %s", c.name, c.format)
	}
}

// cuesEnd reads the last cue's end of srt and vtt answers, hours or not;
// other formats and garbage give 0.
func TestCuesEnd(t *testing.T) {
	for _, c := range []struct {
		body, format string
		want         float64
	}{
		{"1\n00:00:00,000 --> 00:00:02,500\nhi\n\n2\n00:59:58,120 --> 01:00:02,480\nbye\n\n", FormatSRT, 3602.48},
		{"WEBVTT\n\n00:01.000 --> 00:04.250 align:start\nhi\n\n", FormatVTT, 4.25},
		{"WEBVTT\n\n01:00:00.000 --> 02:00:00.000\nhi\n", FormatVTT, 7200},
		{"00:00:00,000 --> 00:00:02,500\n", FormatText, 0},
		{"1\n00:00:00,000 --> nonsense\n", FormatSRT, 0},
		{"1\n00:00:00,000 --> 00:61:00,000\n", FormatSRT, 0},
		{"1\n00:00:00,000 --> NaN:00:00,000\n", FormatSRT, 0},
		{"1\n00:00:00,000 --> -1:00:00,000\n", FormatSRT, 0},
	} {
		got := cuesEnd([]byte(c.body), c.format)
		if math.Abs(got-c.want) > 1e-9 {
			t.Errorf("cuesEnd(%q, %s) = %v, want %v", c.body, c.format, got, c.want)
		}
	}
}
