// Package audiotest makes audio files for tests and benchmarks.
package audiotest

import (
	"bytes"
	"encoding/binary"
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

// The files the overflow builders make declare these many units: at the
// rates they declare, the old arithmetic (units times 1e9 nanoseconds, in
// 64 bits) wrapped to about a second.
const (
	// OverflowSamples is what FLACDeclaring and MP4Declaring declare at
	// 1 Hz: 18,446,744,075 s (213 days), read as 1.29 s when wrapped.
	OverflowSamples = 18_446_744_075
	// OverflowGranule is the Ogg granule span OggDeclaring declares at
	// 48 kHz: (2^64 + 4.8e13) / 1e9 rounded up, 384,308 s (4.4 days),
	// read as 1.0 s when wrapped.
	OverflowGranule = 18_446_792_074
)

// FLACDeclaring returns the FLAC file flac (a valid one, such as the
// fixture) with its STREAMINFO declaring samples at rate Hz.
func FLACDeclaring(flac []byte, samples uint64, rate uint32) []byte {
	out := append([]byte(nil), flac...)
	// fLaC, a 4-byte block header, then STREAMINFO: 10 bytes of block and
	// frame sizes, then 20 bits of rate, 3 of channels, 5 of bits per
	// sample and 36 of samples.
	p := out[18:26]
	v := uint64(rate)<<44 | uint64(p[2]&0x0f)<<40 | uint64(p[3]&0xf0)<<32 | samples&(1<<36-1)
	for i := range 8 {
		p[i] = byte(v >> (56 - 8*i))
	}
	return out
}

// MP4Declaring returns the M4A file m4a (the fixture: its moov after its
// mdat, its movie header of version 0) with a version-1 movie header
// (mvhd) declaring duration at timescale.
func MP4Declaring(m4a []byte, duration uint64, timescale uint32) []byte {
	moov := bytes.Index(m4a, []byte("moov")) - 4
	mvhd := bytes.Index(m4a, []byte("mvhd")) - 4
	if moov < 0 || mvhd < 0 || m4a[mvhd+8] != 0 {
		panic("audiotest: not an M4A with a version-0 mvhd in its moov")
	}
	old := int(binary.BigEndian.Uint32(m4a[mvhd:]))
	box := binary.BigEndian.AppendUint32(nil, uint32(old+12))
	box = append(box, "mvhd"...)
	box = append(box, 1, 0, 0, 0)
	box = binary.BigEndian.AppendUint64(box, uint64(binary.BigEndian.Uint32(m4a[mvhd+12:]))) // creation
	box = binary.BigEndian.AppendUint64(box, uint64(binary.BigEndian.Uint32(m4a[mvhd+16:]))) // modification
	box = binary.BigEndian.AppendUint32(box, timescale)
	box = binary.BigEndian.AppendUint64(box, duration)
	box = append(box, m4a[mvhd+28:mvhd+old]...) // rate, volume, matrix, next track ID
	out := append(append(append([]byte(nil), m4a[:mvhd]...), box...), m4a[mvhd+old:]...)
	binary.BigEndian.PutUint32(out[moov:], binary.BigEndian.Uint32(out[moov:])+12)
	return out
}

// OggDeclaring returns the Ogg Opus file ogg with its last page's
// granule position set so that the stream declares span samples at
// 48 kHz after its pre-skip, and the page's checksum recomputed.
func OggDeclaring(ogg []byte, span uint64) []byte {
	out := append([]byte(nil), ogg...)
	// The OpusHead packet: "OpusHead", version, channels, then the
	// pre-skip (16 bits, little-endian).
	head := bytes.Index(out, []byte("OpusHead"))
	preSkip := uint64(binary.LittleEndian.Uint16(out[head+10:]))
	last := bytes.LastIndex(out, []byte("OggS"))
	binary.LittleEndian.PutUint64(out[last+6:], span+preSkip)
	binary.LittleEndian.PutUint32(out[last+22:], 0)
	binary.LittleEndian.PutUint32(out[last+22:], oggCRC(out[last:]))
	return out
}

// oggCRC is the Ogg page checksum: CRC-32, polynomial 0x04c11db7, not
// reflected, initial value 0.
func oggCRC(b []byte) uint32 {
	var crc uint32
	for _, c := range b {
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
