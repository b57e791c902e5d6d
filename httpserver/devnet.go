package httpserver

import (
	"net/http"

	"github.com/ethereum/go-ethereum/common"

	"github.com/perceptron-cloud/perceptron/fault"
)

// The /devnet routes exist only when the platform runs a dev chain
// (perceptron.Config.DevChain).

func (s *server) devnetInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.p.DevChain.Info(absoluteURL(r, "/devnet/rpc")))
}

type faucetRequest struct {
	Address string `json:"address"`
	USDT    string `json:"usdt"`
}

func (s *server) devnetFaucet(w http.ResponseWriter, r *http.Request) {
	var req faucetRequest
	if err := decodeJSON(w, r, smallBody, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !common.IsHexAddress(req.Address) {
		s.writeError(w, r, fault.New(fault.Invalid, "invalid address"))
		return
	}
	if req.USDT == "" {
		req.USDT = "100.00"
	}
	res, err := s.p.DevChain.Faucet(r.Context(), common.HexToAddress(req.Address), req.USDT)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// absoluteURL returns path on the host the request came in on.
func absoluteURL(r *http.Request, path string) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host + path
}
