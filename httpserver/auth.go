package httpserver

import (
	"net/http"

	"github.com/perceptron-cloud/perceptron/auth"
)

const smallBody = 64 << 10

func (s *server) challenge(w http.ResponseWriter, r *http.Request) {
	c, err := s.p.Auth.Challenge(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"nonce": c.Nonce, "expires_at": c.ExpiresAt.Unix()})
}

type verifyRequest struct {
	Address   string `json:"address"`
	Signature string `json:"signature"`
	Nonce     string `json:"nonce"`
}

type loginResponse struct {
	MasterKey string `json:"master_key"`
	Address   string `json:"address"`
}

func (s *server) verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if err := decodeJSON(w, r, smallBody, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	l, err := s.p.Auth.Verify(r.Context(), req.Address, req.Signature, req.Nonce)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, loginResponse{MasterKey: l.MasterKey, Address: l.Address})
}

func (s *server) regenerateMasterKey(w http.ResponseWriter, r *http.Request) {
	l, err := s.p.Auth.RegenerateMasterKey(r.Context(), principal(r.Context()))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, loginResponse{MasterKey: l.MasterKey, Address: l.Address})
}

type generateKeyRequest struct {
	Label string `json:"label"`
}

type generatedKey struct {
	ID        string `json:"id"`
	Key       string `json:"key"`
	KeyPrefix string `json:"key_prefix"`
	Label     string `json:"label"`
	CreatedAt int64  `json:"created_at"`
}

func (s *server) generateKey(w http.ResponseWriter, r *http.Request) {
	var req generateKeyRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, smallBody, &req); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	k, err := s.p.Auth.GenerateClientKey(r.Context(), principal(r.Context()), req.Label)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, generatedKey{
		ID:        k.Record.ID,
		Key:       k.Key,
		KeyPrefix: k.Record.Prefix,
		Label:     k.Record.Label,
		CreatedAt: k.Record.CreatedAt.Unix(),
	})
}

type keyInfo struct {
	ID         string `json:"id,omitempty"`
	KeyPrefix  string `json:"key_prefix"`
	Label      string `json:"label"`
	CreatedAt  int64  `json:"created_at"`
	LastUsedAt *int64 `json:"last_used_at"`
}

func keyInfos(keys []auth.ClientKeyRecord, withID bool) []keyInfo {
	out := make([]keyInfo, 0, len(keys))
	for _, k := range keys {
		ki := keyInfo{KeyPrefix: k.Prefix, Label: k.Label, CreatedAt: k.CreatedAt.Unix()}
		if withID {
			ki.ID = k.ID
		}
		if !k.LastUsedAt.IsZero() {
			t := k.LastUsedAt.Unix()
			ki.LastUsedAt = &t
		}
		out = append(out, ki)
	}
	return out
}

func (s *server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.p.Auth.ListClientKeys(r.Context(), principal(r.Context()))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keyInfos(keys, true)})
}

func (s *server) keyMetrics(w http.ResponseWriter, r *http.Request) {
	keys, err := s.p.Auth.ListClientKeys(r.Context(), principal(r.Context()))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keyInfos(keys, false)})
}

func (s *server) revokeKey(w http.ResponseWriter, r *http.Request) {
	if err := s.p.Auth.RevokeClientKey(r.Context(), principal(r.Context()), r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
}

func (s *server) walletAddress(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"address": principal(r.Context()).Address})
}
