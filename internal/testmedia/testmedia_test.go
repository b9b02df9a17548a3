package testmedia

import (
	"net/http/httptest"
	"os/exec"
	"testing"
)

// TestLayoutsPlayStraightFromTheOrigin is the control of the player
// matrix: stock ffmpeg reads every layout to its end straight from the
// origin, with no limiter in between, so that a failure through the
// limiter is the limiter's.
func TestLayoutsPlayStraightFromTheOrigin(t *testing.T) {
	srv := httptest.NewServer(Origin(Dir(t)))
	defer srv.Close()
	for _, layout := range Layouts {
		t.Run(layout, func(t *testing.T) {
			out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
				"-i", srv.URL+Entry[layout], "-map", "0", "-c", "copy", "-f", "null", "-").CombinedOutput()
			if err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, out)
			}
		})
	}
}
