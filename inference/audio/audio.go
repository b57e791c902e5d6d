// Package audio reads an audio upload's format and duration from the file
// itself, before it is transcribed, so that its cost can be held: WAV
// (github.com/go-audio/riff's chunk parser), MP3 (github.com/hajimehoshi/go-mp3, which
// walks every frame), FLAC (github.com/mewkiz/flac, its STREAMINFO), Ogg
// Opus (github.com/pion/webrtc's oggreader: the last page's granule
// position less the pre-skip, at 48 kHz), WebM (github.com/at-wat/ebml-go:
// the segment's Duration and TimecodeScale) and MP4/M4A
// (github.com/abema/go-mp4: the movie header's duration and timescale).
// No container is parsed by hand.
//
// A duration is computed from what the container declares (a count of
// samples, a granule position, a timescale) with checked arithmetic: a
// count and a rate are split into whole seconds and a remainder, so no
// product overflows, and audio longer than [MaxDuration] is refused with
// [ErrTooLong], whatever the declared figures (a FLAC file declaring
// 18,446,744,075 samples at 1 Hz is 213 days, not the 1.3 s that
// wrapping 64-bit nanoseconds made of it).
package audio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"time"

	"github.com/abema/go-mp4"
	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/webm"
	"github.com/go-audio/riff"
	"github.com/hajimehoshi/go-mp3"
	"github.com/mewkiz/flac"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// Formats.
const (
	WAV  = "wav"
	MP3  = "mp3"
	FLAC = "flac"
	OGG  = "ogg"
	WebM = "webm"
	MP4  = "mp4" // M4A included
)

// Info is what Probe reads.
type Info struct {
	Format   string
	Duration time.Duration
}

// Errors of Probe.
var (
	// ErrUnsupported is data that is none of the formats.
	ErrUnsupported = errors.New("unsupported audio format: send wav, mp3, flac, ogg (opus), webm or m4a")
	// ErrUnreadable is data of a known format that cannot be read to the
	// end (truncated or damaged) or has no duration.
	ErrUnreadable = errors.New("unreadable audio")
	// ErrTooLong is a file whose duration (declared or read) is more
	// than MaxDuration.
	ErrTooLong = errors.New("audio longer than 24 hours")
)

// MaxDuration is the longest audio Probe accepts: 24 hours. No upload of
// 25 MB holds more speech than that at any bitrate a transcription
// service accepts, and a day in nanoseconds is far from overflowing.
const MaxDuration = 24 * time.Hour

// span is units at rate units a second, as a duration: whole seconds and
// the remainder's fraction are computed apart, so nothing overflows, and
// more than MaxDuration is ErrTooLong.
func span(units, rate uint64) (time.Duration, error) {
	if rate == 0 {
		return 0, errors.New("no rate")
	}
	secs, rem := units/rate, units%rate
	if secs > uint64(MaxDuration/time.Second) {
		return 0, ErrTooLong
	}
	// rem < rate, so the 128-bit rem * 1e9 divided by rate fits in 64 bits.
	hi, lo := bits.Mul64(rem, uint64(time.Second))
	frac, _ := bits.Div64(hi, lo, rate)
	d := time.Duration(secs)*time.Second + time.Duration(frac)
	if d > MaxDuration {
		return 0, ErrTooLong
	}
	return d, nil
}

// Detect returns the format the data's first bytes say, or "".
func Detect(head []byte) string {
	switch {
	case len(head) >= 12 && string(head[:4]) == "RIFF" && string(head[8:12]) == "WAVE":
		return WAV
	case len(head) >= 4 && string(head[:4]) == "fLaC":
		return FLAC
	case len(head) >= 4 && string(head[:4]) == "OggS":
		return OGG
	case len(head) >= 4 && bytes.Equal(head[:4], []byte{0x1a, 0x45, 0xdf, 0xa3}):
		return WebM
	case len(head) >= 8 && string(head[4:8]) == "ftyp":
		return MP4
	case len(head) >= 3 && string(head[:3]) == "ID3",
		len(head) >= 2 && head[0] == 0xff && head[1]&0xe0 == 0xe0:
		return MP3
	}
	return ""
}

// Probe reads the format and duration of the size bytes of audio in r
// (a *bytes.Reader, an *os.File, an io.SectionReader...). It reads what
// the container needs: headers for WAV, FLAC, WebM and MP4, every frame
// header of an MP3 and every page header of an Ogg file, so its time is
// at most linear in size.
func Probe(r io.ReaderAt, size int64) (Info, error) {
	head := make([]byte, min(size, 16))
	if n, _ := r.ReadAt(head, 0); n < len(head) {
		head = head[:n]
	}
	format := Detect(head)
	if format == "" {
		return Info{}, ErrUnsupported
	}
	d, err := duration(format, newBufSeeker(io.NewSectionReader(r, 0, size)), size)
	if err == nil && d <= 0 {
		err = errors.New("no duration")
	}
	if errors.Is(err, ErrTooLong) {
		return Info{Format: format}, fmt.Errorf("%w (%s)", ErrTooLong, format)
	}
	if err != nil {
		return Info{Format: format}, fmt.Errorf("%w (%s): %v", ErrUnreadable, format, err)
	}
	return Info{Format: format, Duration: d}, nil
}

// wavDuration walks a WAV file's RIFF chunks with go-audio/riff's
// parser. go-audio/wav's Decoder is not used: it allocates whatever its
// LIST, smpl, cue and fmt chunks declare (up to 4 GiB, from a 60-byte
// upload), so each chunk's size is checked against the file here before
// anything reads it, and chunks other than fmt and data are skipped
// unread. The duration is the data chunk's length at the fmt chunk's
// frame size and sample rate.
func wavDuration(r *bufSeeker, size int64) (time.Duration, error) {
	p := riff.New(r)
	id, _, err := p.IDnSize()
	if err != nil || id != riff.RiffID {
		return 0, errors.New("invalid WAV header")
	}
	var format [4]byte
	if _, err := io.ReadFull(r, format[:]); err != nil || format != riff.WavFormatID {
		return 0, errors.New("invalid WAV header")
	}
	pos := int64(12)
	fmtSeen := false
	for {
		ch, err := p.NextChunk()
		if err != nil {
			return 0, fmt.Errorf("no data chunk: %w", io.ErrUnexpectedEOF)
		}
		pos += 8
		left := size - pos
		switch ch.ID {
		case riff.FmtID:
			// 16 bytes of PCM format, up to 40 with the extension.
			if ch.Size < 16 || ch.Size > 64 || int64(ch.Size) > left {
				return 0, errors.New("invalid fmt chunk")
			}
			if err := ch.DecodeWavHeader(p); err != nil {
				return 0, err
			}
			fmtSeen = true
		case riff.DataFormatID:
			n := int64(ch.Size)
			if n > left {
				n = left
				if n < int64(ch.Size)-1 { // the pad byte aside, the data must be there
					return 0, io.ErrUnexpectedEOF
				}
			}
			frame := int64(p.NumChannels) * int64(p.BitsPerSample) / 8
			if !fmtSeen || frame <= 0 || p.SampleRate == 0 {
				return 0, errors.New("invalid WAV format")
			}
			if n <= 0 {
				return 0, errors.New("no samples")
			}
			return span(uint64(n/frame), uint64(p.SampleRate))
		default:
			if int64(ch.Size) > left {
				return 0, io.ErrUnexpectedEOF
			}
			if _, err := r.Seek(int64(ch.Size), io.SeekCurrent); err != nil {
				return 0, err
			}
		}
		pos += int64(ch.Size)
	}
}

func duration(format string, r *bufSeeker, size int64) (d time.Duration, err error) {
	defer func() {
		if r := recover(); r != nil { // a decoder's panic on hostile data
			d, err = 0, fmt.Errorf("decoder failed: %v", r)
		}
	}()
	switch format {
	case WAV:
		return wavDuration(r, size)
	case MP3:
		// go-mp3 allocates the size an ID3v2 tag declares before reading
		// it (up to 512 MiB, from a 10-byte upload): refuse a tag larger
		// than the file. The size is go-mp3's own reading of the header.
		var h [10]byte
		if n, _ := r.sr.ReadAt(h[:], 0); n == len(h) && string(h[:3]) == "ID3" {
			if tag := int64(h[6])<<21 | int64(h[7])<<14 | int64(h[8])<<7 | int64(h[9]); tag > size-int64(len(h)) {
				return 0, io.ErrUnexpectedEOF
			}
		}
		dec, err := mp3.NewDecoder(r)
		if err != nil {
			return 0, err
		}
		if dec.SampleRate() <= 0 || dec.Length() <= 0 {
			return 0, errors.New("no frames")
		}
		// Length is of the decoded 16-bit stereo stream.
		samples := dec.Length() / 4
		return span(uint64(samples), uint64(dec.SampleRate()))
	case FLAC:
		st, err := flac.New(r)
		if err != nil {
			return 0, err
		}
		if st.Info.SampleRate == 0 {
			return 0, errors.New("no sample rate")
		}
		return span(st.Info.NSamples, uint64(st.Info.SampleRate))
	case OGG:
		or, head, err := oggreader.NewWith(r)
		if err != nil {
			return 0, err
		}
		var last uint64
		for {
			_, ph, err := or.ParseNextPage()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, err
			}
			if ph.GranulePosition != math.MaxUint64 { // -1: no packet ends on the page
				last = ph.GranulePosition
			}
		}
		if last <= uint64(head.PreSkip) {
			return 0, errors.New("no audio pages")
		}
		return span(last-uint64(head.PreSkip), 48000)
	case WebM:
		var doc struct {
			Segment struct {
				Info webm.Info `ebml:"Info"`
			} `ebml:"Segment"`
		}
		// No element is larger than the file: ebml-go allocates a leaf's
		// declared size (up to 128 MiB by default) before reading it.
		if err := ebml.Unmarshal(r, &doc, ebml.WithIgnoreUnknown(true), ebml.WithMaxLeafElementSize(uint64(size))); err != nil && !errors.Is(err, ebml.ErrReadStopped) {
			return 0, err
		}
		info := doc.Segment.Info
		scale := info.TimecodeScale
		if scale == 0 {
			scale = 1_000_000
		}
		ns := info.Duration * float64(scale)
		if math.IsNaN(ns) || ns <= 0 {
			return 0, errors.New("no duration")
		}
		if ns > float64(MaxDuration) {
			return 0, ErrTooLong
		}
		return time.Duration(ns), nil
	case MP4:
		p, err := mp4.Probe(r)
		if err != nil {
			return 0, err
		}
		if p.Timescale == 0 {
			return 0, errors.New("no timescale")
		}
		return span(p.Duration, uint64(p.Timescale))
	}
	return 0, ErrUnsupported
}

// bufSeeker reads a section through a 64 KiB buffer, so that decoders
// reading a few bytes at a time (frame and page headers) make one read of
// the underlying file per 64 KiB rather than per header. A seek within
// the buffer moves in it; any other drops it.
type bufSeeker struct {
	sr  *io.SectionReader
	buf []byte
	off int64 // the section offset of buf[0]
	pos int64 // the reader's offset in the section
}

func newBufSeeker(sr *io.SectionReader) *bufSeeker { return &bufSeeker{sr: sr} }

func (b *bufSeeker) Read(p []byte) (int, error) {
	if b.pos < b.off || b.pos >= b.off+int64(len(b.buf)) {
		if b.pos >= b.sr.Size() {
			return 0, io.EOF
		}
		if b.buf == nil {
			b.buf = make([]byte, 64<<10)
		}
		n, err := b.sr.ReadAt(b.buf[:cap(b.buf)], b.pos)
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
		b.buf, b.off = b.buf[:n], b.pos
	}
	n := copy(p, b.buf[b.pos-b.off:])
	b.pos += int64(n)
	return n, nil
}

func (b *bufSeeker) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += b.pos
	case io.SeekEnd:
		offset += b.sr.Size()
	case io.SeekStart:
	default:
		return 0, errors.New("audio: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("audio: negative position")
	}
	b.pos = offset
	return offset, nil
}
