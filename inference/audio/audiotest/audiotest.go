// Package audiotest makes audio files for tests and benchmarks.
package audiotest

import (
	"math"
	"os"

	goaudio "github.com/go-audio/audio"
	"github.com/go-audio/wav"
)

// WriteWAV writes seconds of a 440 Hz tone as a 16 kHz mono 16-bit WAV
// file (go-audio/wav's encoder): 32,000 bytes a second after a 44-byte
// header.
func WriteWAV(path string, seconds int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	enc := wav.NewEncoder(f, 16000, 16, 1, 1)
	buf := &goaudio.IntBuffer{Format: &goaudio.Format{NumChannels: 1, SampleRate: 16000}, SourceBitDepth: 16, Data: make([]int, 16000)}
	for i := range buf.Data {
		buf.Data[i] = int(8000 * math.Sin(2*math.Pi*440*float64(i)/16000))
	}
	for range seconds {
		if err := enc.Write(buf); err != nil {
			return err
		}
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return f.Close()
}
