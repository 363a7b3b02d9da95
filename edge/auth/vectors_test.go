package auth

import (
	"encoding/json"
	"github.com/snapgate/snapgate/fbs/jwk"
	"os"
	"path/filepath"
	"testing"
)

// vectorDir holds public test vectors copied from their upstream repositories;
// testdata/vectors/SOURCES.md names each source, commit and license.
const vectorDir = "testdata/vectors"

// wycheproofSkip lists the upstream cases /work/shared/vectors/README.md
// ("wycheproof/testvectors_v1") identifies as inconsistent in
// C2SP/wycheproof@dac1dd47 json_web_signature_test.json.
var wycheproofSkip = map[int]string{
	346: "key labelled PS256, token PS384",
	350: "key labelled PS256, token PS384",
	347: `key alg "ES521" (not a JWA name), token ES512`,
	351: `key alg "ES521" (not a JWA name), token ES512`,
	367: "byte-identical to valid tc357 but marked invalid",
	370: "byte-identical to valid tc357 but marked invalid",
	372: "'?' inserted into the token, marked valid",
	373: "'?' inserted into the token, marked valid",
}

type wpFile struct {
	TestGroups []struct {
		Comment string          `json:"comment"`
		Public  json.RawMessage `json:"public"`
		Private json.RawMessage `json:"private"`
		Tests   []struct {
			TcID    int    `json:"tcId"`
			Comment string `json:"comment"`
			JWS     string `json:"jws"`
			Result  string `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

func loadWycheproof(t *testing.T, name string) wpFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, "wycheproof/testvectors_v1", name))
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	var f wpFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return f
}

// verifierKey is the key a verifier is configured with: the public half
// when the group has one, else the (symmetric) private one.
func verifierKey(pub, priv json.RawMessage, set bool) []byte {
	k := pub
	if len(k) == 0 {
		k = priv
	}
	if set {
		return k
	}
	return []byte(`{"keys":[` + string(k) + `]}`)
}

func runWycheproof(t *testing.T, name string, set bool) {
	f := loadWycheproof(t, name)
	var pass, skipped int
	for _, g := range f.TestGroups {
		ks, kerr := jwk.ParseKeySet(verifierKey(g.Public, g.Private, set))
		for _, tc := range g.Tests {
			if why, ok := wycheproofSkip[tc.TcID]; ok && !set {
				t.Logf("tc%d skipped: %s", tc.TcID, why)
				skipped++
				continue
			}
			var err error = kerr
			if kerr == nil {
				_, _, err = VerifyJWS([]byte(tc.JWS), ks, nil)
			}
			switch tc.Result {
			case "valid":
				if err != nil {
					t.Errorf("tc%d (%s, %s): valid token rejected: %v", tc.TcID, g.Comment, tc.Comment, err)
					continue
				}
			case "invalid":
				if err == nil {
					t.Errorf("tc%d (%s, %s): invalid token accepted", tc.TcID, g.Comment, tc.Comment)
					continue
				}
			default:
				t.Fatalf("tc%d: result %q: this suite has only valid and invalid cases", tc.TcID, tc.Result)
			}
			pass++
		}
	}
	t.Logf("%s: %d agree, %d skipped", name, pass, skipped)
}

// TestWycheproofJWS runs every case of C2SP/wycheproof
// testvectors_v1/json_web_signature_test.json (Apache-2.0).
func TestWycheproofJWS(t *testing.T) { runWycheproof(t, "json_web_signature_test.json", false) }

// TestWycheproofJWK runs every case of C2SP/wycheproof
// testvectors_v1/json_web_key_test.json (Apache-2.0).
func TestWycheproofJWK(t *testing.T) { runWycheproof(t, "json_web_key_test.json", true) }
