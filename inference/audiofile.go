package inference

import (
	"context"
	"errors"
	"io"
	"os"

	"golang.org/x/sync/semaphore"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// audioMemory is how much of an upload is kept in memory; the rest goes
// to a temporary file, so a transcription holds at most this much of
// the process's memory while it waits for its provider.
const audioMemory = 1 << 20

// ErrAudioTooLarge is what [Service.ReadAudio] and [Service.Transcribe]
// return, wrapped in a fault.TooLarge error with the message
// [Service.MsgAudioTooLarge], for an upload over the limit.
var ErrAudioTooLarge = errors.New("audio file too large")

// AudioFile is an upload read to its end: its first MiB in memory, the
// rest in an unlinked temporary file. It is an io.Reader (from its
// start, once) and an io.ReaderAt; Close frees it. Read it with
// [Service.ReadAudio] to transcribe it after other work (an HTTP handler
// reads the upload before the form fields that follow it).
type AudioFile struct {
	mem  []byte
	f    *os.File
	size int64
	pos  int64 // Read's position

	// The temporary file's bytes, counted against the service's budget.
	spool   *semaphore.Weighted
	spooled int64

	// The hold placed for the wallet before the upload was read, until
	// Transcribe takes it or Close releases it.
	account string
	hold    *billing.Hold
	release func(holdID string)
}

// ReadAudio reads r to its end into an [AudioFile], refusing more than
// [Service.MaxAudioBytes] with [ErrAudioTooLarge] (fault.TooLarge). An
// error of r is returned as it is.
//
// With an account, it first holds [MinimumHold] of that wallet, or fails
// with fault.InsufficientFunds ([MsgInsufficientCredits]) before reading
// a byte: an upload is read, and takes memory and disk, only for a
// wallet that can pay, and a wallet has at most one upload in flight per
// $0.05 it has. [Service.Transcribe] for the same account uses that hold;
// Close releases it if unused. With account "" nothing is held.
func (s *Service) ReadAudio(ctx context.Context, account string, r io.Reader) (*AudioFile, error) {
	if account == "" {
		return s.stt.read(r, s.MsgAudioTooLarge())
	}
	h, err := s.holdMinimum(ctx, account)
	if err != nil {
		return nil, err
	}
	a, err := s.stt.read(r, s.MsgAudioTooLarge())
	if err != nil {
		s.releaseHold(ctx, account, h.ID)
		return nil, err
	}
	a.account, a.hold = account, &h
	a.release = func(id string) { s.releaseHold(ctx, account, id) }
	return a, nil
}

// takeHold returns the file's hold for account, which the caller now owns.
func (a *AudioFile) takeHold(account string) (billing.Hold, bool) {
	if a.hold == nil || a.account != account {
		return billing.Hold{}, false
	}
	h := *a.hold
	a.hold = nil
	return h, true
}

// ErrAudioSpoolFull is returned, wrapped in a fault.RateLimited error,
// when the uploads in progress fill the temporary files' budget
// (Options.MaxAudioSpool).
var ErrAudioSpoolFull = errors.New("audio uploads fill the temporary files' budget")

// MsgAudioSpoolFull is the refusal of an upload past the budget.
const MsgAudioSpoolFull = "too many audio uploads in progress: retry later"

// read reads r into an AudioFile, its first MiB in memory and the rest in
// a temporary file counted against the service's spool budget.
func (st *sttState) read(r io.Reader, tooLarge string) (*AudioFile, error) {
	maxBytes := st.maxBytes
	a := &AudioFile{}
	first := min(maxBytes+1, audioMemory)
	buf := make([]byte, 0, min(first, 64<<10))
	for int64(len(buf)) < first {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), int(first))])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			a.mem, a.size = buf, int64(len(buf))
			return a.checkSize(maxBytes, tooLarge)
		}
		if err != nil {
			return nil, err
		}
	}
	a.mem = buf
	f, err := os.CreateTemp(st.tempDir, "perceptron-audio-*")
	if err != nil {
		return nil, fault.Wrap(err, fault.Internal, "internal error")
	}
	// Unlinked at once where the system allows it (a crash leaves
	// nothing); elsewhere Close removes it.
	_ = os.Remove(f.Name())
	a.f, a.spool = f, st.spool
	n, err := io.Copy(spoolWriter{a}, io.LimitReader(r, maxBytes+1-int64(len(buf))))
	a.size = int64(len(buf)) + n
	if err != nil {
		a.Close()
		if errors.Is(err, ErrAudioSpoolFull) {
			return nil, fault.Wrap(err, fault.RateLimited, MsgAudioSpoolFull)
		}
		return nil, err
	}
	return a.checkSize(maxBytes, tooLarge)
}

// spoolWriter writes to the file's temporary file what the spool budget
// has room for.
type spoolWriter struct{ a *AudioFile }

func (w spoolWriter) Write(p []byte) (int, error) {
	if !w.a.spool.TryAcquire(int64(len(p))) {
		return 0, ErrAudioSpoolFull
	}
	w.a.spooled += int64(len(p))
	return w.a.f.Write(p)
}

func (a *AudioFile) checkSize(maxBytes int64, msg string) (*AudioFile, error) {
	if a.size > maxBytes {
		a.Close()
		return nil, fault.Wrap(ErrAudioTooLarge, fault.TooLarge, msg)
	}
	return a, nil
}

// Size is the upload's length in bytes.
func (a *AudioFile) Size() int64 { return a.size }

// ReadAt reads the upload at off.
func (a *AudioFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("inference: negative offset")
	}
	if off >= a.size {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(a.mem)) {
		n = copy(p, a.mem[off:])
	}
	if n < len(p) && a.f != nil && off+int64(n) < a.size {
		want := min(int64(len(p)-n), a.size-off-int64(n))
		m, err := a.f.ReadAt(p[n:n+int(want)], off+int64(n)-int64(len(a.mem)))
		n += m
		if err != nil && !errors.Is(err, io.EOF) {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read reads the upload from its start.
func (a *AudioFile) Read(p []byte) (int, error) {
	n, err := a.ReadAt(p, a.pos)
	a.pos += int64(n)
	if n > 0 && errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// Close frees the upload (its temporary file). It may be called more
// than once.
func (a *AudioFile) Close() error {
	if a.hold != nil {
		a.release(a.hold.ID)
		a.hold = nil
	}
	a.mem = nil
	if a.f == nil {
		return nil
	}
	f := a.f
	a.f = nil
	a.spool.Release(a.spooled)
	a.spooled = 0
	err := f.Close()
	_ = os.Remove(f.Name()) // where it could not be unlinked at once
	return err
}
