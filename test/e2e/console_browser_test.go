//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/test/guest"
)

// TestConsoleBrowser opens the browser console of a real VM in headless
// Chromium against a real API and agent: log in through the page's form, see
// the guest's boot marker, type a command into its shell and read the
// answer, then stop and start the VM and see the page attach again. A
// screenshot is saved as a test artifact.
func TestConsoleBrowser(t *testing.T) {
	chromium := needChromium(t)
	c := newCluster(t)
	c.mustCLI("vm", "create", "g1", "--image", c.imageURL, "--sha256", c.imageSHA,
		"--memory", "256Mi", "--disk", "1Gi", "--wait")
	c.waitLog("g1", guest.ReadyMarker, 1, 90*time.Second)

	b := startBrowser(t, chromium, c.api.URL, filepath.Join(c.dataDir, "pki", "ca.pem"))
	b.do(chromedp.Navigate(c.api.URL + "/ui/vms/g1/console"))

	// No token in this tab yet: the page asks for one.
	b.do(chromedp.WaitVisible("#login-form"))
	b.screenshot("console-login.png")
	b.do(chromedp.SendKeys("#email", adminEmail),
		chromedp.SendKeys("#password", adminPassword),
		chromedp.Click("#login-submit"))
	b.waitFor("the terminal to show the guest's boot marker", 60*time.Second, func() bool {
		return strings.Contains(b.terminal(), guest.ReadyMarker)
	})
	b.waitFor("the session to be attached", 30*time.Second, func() bool { return b.status() == "attached" })
	if header := b.text(".bar"); !strings.Contains(header, "g1") || !strings.Contains(header, "running") {
		b.fatalf("header %q does not show the VM and its state", header)
	}

	// Type into the guest's shell; only the shell's answer holds hello-42.
	b.do(chromedp.Click("#terminal"), typeKeys("echo hello-$((6*7))"+kb.Enter))
	b.waitFor("the guest's answer hello-42", 30*time.Second, func() bool {
		return strings.Contains(b.terminal(), "hello-42")
	})
	b.screenshot("console.png")

	// The VM stops: the page says so and waits; it runs again: the page
	// attaches by itself and shows the new boot.
	c.mustCLI("vm", "stop", "g1", "--grace-period", "90s", "--wait")
	b.waitFor("the page to notice the stop", 30*time.Second, func() bool {
		return b.status() != "attached" && strings.Contains(b.text("#vm-phase"), "stopped")
	})
	t.Logf("after stop: %q", b.text("#notice-text"))
	c.mustCLI("vm", "start", "g1", "--wait")
	c.waitLog("g1", guest.ReadyMarker, 2, 90*time.Second)
	b.waitFor("the page to attach again", 60*time.Second, func() bool { return b.status() == "attached" })
	b.waitFor("the new boot's marker", 30*time.Second, func() bool {
		return strings.Contains(b.terminal(), guest.ReadyMarker)
	})
	b.do(chromedp.Click("#terminal"), typeKeys("echo again-$((7*6))"+kb.Enter))
	b.waitFor("the restarted guest's answer again-42", 30*time.Second, func() bool {
		return strings.Contains(b.terminal(), "again-42")
	})
	b.screenshot("console-reattached.png")
	b.checkConsole()
}

// typeKeys types into the focused element as a keyboard does: one keyDown
// that carries the text, then a keyUp. chromedp's SendKeys sends a keyDown
// and a separate char event; xterm.js takes the key from the keydown, and the
// char event, which a real keystroke never sends after a handled keydown,
// would type every character twice.
func typeKeys(keys string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range keys {
			events := kb.Encode(r)
			down, up := *events[0], *events[len(events)-1]
			for _, e := range events {
				if e.Type == kb.KeyChar {
					down.Text, down.UnmodifiedText = e.Text, e.UnmodifiedText
				}
			}
			for _, e := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, e); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// needChromium finds Debian's chromium (make deps installs it). It is
// required under OTHERIX_REQUIRE_QEMU=1, as in CI; elsewhere its absence
// skips the test.
func needChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	if os.Getenv("OTHERIX_REQUIRE_QEMU") == "1" {
		t.Fatalf("chromium is required (OTHERIX_REQUIRE_QEMU=1); make deps installs it: %v", err)
	}
	t.Skipf("chromium not found (make deps installs it): %v", err)
	return ""
}

// browser is one headless Chromium with one tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	// mu guards console, the page's console messages and uncaught errors.
	mu      sync.Mutex
	console []string
}

// startBrowser starts headless Chromium for a page served by the API at
// base. Chromium does not trust the cluster CA; rather than ignoring
// certificate errors wholesale, the test checks the API's certificate
// against ca.pem itself and tells Chromium to accept exactly that
// certificate's public key (--ignore-certificate-errors-spki-list). A
// plain http:// base on loopback (a test's own proxy) needs no certificate.
func startBrowser(t *testing.T, chromium, base, caFile string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 640),
	)
	if strings.HasPrefix(base, "https://") {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", verifiedSPKI(t, base, caFile)))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}

	// Collect what the page logs, CSP reports among them, until the tab ends.
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, string(m.Type)+": "+m.Text)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		<-done
	})
	return b
}

// verifiedSPKI dials base, verifies its certificate against the CA in
// caFile, and returns the base64 SHA-256 of its public key, as Chromium's
// --ignore-certificate-errors-spki-list takes it.
func verifiedSPKI(t *testing.T, base, caFile string) string {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("the API's certificate does not verify against the cluster CA: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// do runs actions in the tab, each step bounded.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fatalf("browser: %v", err)
	}
}

// eval evaluates a string-valued expression; "" when it fails.
func (b *browser) eval(expr string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		return ""
	}
	return s
}

// terminal is the terminal's whole buffer, scrollback included.
func (b *browser) terminal() string {
	return b.eval(`window.__otherixConsole ? window.__otherixConsole.text() : ""`)
}

// status is the connection state the header shows.
func (b *browser) status() string {
	return b.eval(`window.__otherixConsole ? window.__otherixConsole.status() : ""`)
}

func (b *browser) text(selector string) string {
	return b.eval(`(document.querySelector(` + jsString(selector) + `) || {}).textContent || ""`)
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func (b *browser) waitFor(what string, within time.Duration, cond func() bool) {
	b.t.Helper()
	if !testutil.Until(within, 200*time.Millisecond, cond) {
		b.fatalf("timed out after %s waiting for %s", within, what)
	}
}

// artifactDir is $OTHERIX_ARTIFACTS, or test/e2e/artifacts (gitignored).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("OTHERIX_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the tab as a PNG artifact and logs where.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(artifactDir(b.t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot: %s", path)
}

// checkConsole fails on a Content-Security-Policy report or an uncaught
// error in the page: either means the page broke in a way the test might
// not see on screen.
func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		if strings.Contains(m, "Content Security Policy") || strings.HasPrefix(m, "exception") {
			b.t.Errorf("page console: %s", m)
		}
	}
}

// fatalf saves what the page showed, then fails.
func (b *browser) fatalf(format string, args ...any) {
	b.t.Helper()
	b.screenshot("console-failure.png")
	b.mu.Lock()
	b.t.Logf("page console:\n%s", strings.Join(b.console, "\n"))
	b.mu.Unlock()
	b.t.Logf("header: %q notice: %q\nterminal:\n%s", b.text(".bar"), b.text("#notice-text"), tail(b.terminal(), 3000))
	b.t.Fatalf(format, args...)
}
