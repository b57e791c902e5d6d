package inference

import (
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
