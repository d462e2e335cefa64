package bootapi_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	yaml "go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbc admin@example"

var (
	preseedURLRE = regexp.MustCompile(`url=(\S+)`)
	seedURLRE    = regexp.MustCompile(`ds=nocloud;s=(\S+)`)
)

// installerProfile is debian-12 with a preseed, a user-data and SSH keys, its
// command line naming the preseed and the NoCloud seed.
func (h *harness) installerProfile(t *testing.T) {
	t.Helper()
	_, err := h.profiles.UpdateProfile(context.Background(), &bootapiv1.UpdateProfileRequest{
		Profile: &bootapiv1.Profile{Name: "debian-12",
			Cmdline: `console=ttyS0 auto=true priority=critical url={{.InstallerURL "preseed"}} ds=nocloud;s={{.InstallerURL ""}}`,
			Installer: &bootapiv1.InstallerTemplates{
				Preseed:           "d-i netcfg/get_hostname string {{.Machine.Hostname}}\nd-i preseed/early_command string echo {{sh .Job.ID}}\n",
				UserData:          "#cloud-config\nhostname: {{.Machine.Hostname}}\nrole: {{index .Machine.Labels \"role\"}}\n",
				SshAuthorizedKeys: []string{testKey},
			}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"cmdline", "installer"}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestInstallerFiles: a dispatched job's installer files are served, over
// real HTTP, rendered for its machine, only to that machine's address with the
// job's key, while the job runs; the NoCloud seed has meta-data, user-data and
// vendor-data; the first boot's succeeded report is the session's last hop
// and closes the files.
func TestInstallerFiles(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	h.installerProfile(t)
	ctx := context.Background()
	if _, err := h.machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{
		Machine:    &bootapiv1.Machine{Mac: mac, Labels: map[string]string{"role": "db"}, SshAuthorizedKeys: []string{"ssh-rsa AAAAB3 ops@example"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels", "ssh_authorized_keys"}},
	}); err != nil {
		t.Fatal(err)
	}
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	id := jr.GetJob().GetId()
	code, script := h.get(t, "/ipxe/v1/config?mac="+mac)
	pm, sm := preseedURLRE.FindStringSubmatch(script), seedURLRE.FindStringSubmatch(script)
	if code != 200 || pm == nil || sm == nil {
		t.Fatalf("script: %d\n%s", code, script)
	}
	preseed, seed := pm[1], sm[1]
	if !strings.HasPrefix(preseed, h.base+"/installer/v1/"+id+"/") || !strings.HasSuffix(preseed, "/preseed") || seed+"preseed" != preseed {
		t.Fatalf("preseed URL %q, seed %q", preseed, seed)
	}
	if len(getJob(t, h, id).GetInstallerKeyHash()) != 0 {
		t.Error("the API returns the installer key's hash")
	}
	from := machineIP(mac)
	fetch := func(from, u string) (int, string) {
		t.Helper()
		return h.getFrom(t, from, strings.TrimPrefix(u, h.base))
	}

	code, body := fetch(from, preseed)
	if code != 200 || body != "d-i netcfg/get_hostname string node0\nd-i preseed/early_command string echo '"+id+"'\n" {
		t.Fatalf("preseed: %d\n%s", code, body)
	}
	var meta struct {
		InstanceID string   `yaml:"instance-id"`
		Hostname   string   `yaml:"local-hostname"`
		Keys       []string `yaml:"public-keys"`
	}
	code, body = fetch(from, seed+"meta-data")
	if err := yaml.Unmarshal([]byte(body), &meta); code != 200 || err != nil || meta.InstanceID != "bootchain-"+id || meta.Hostname != "node0" ||
		strings.Join(meta.Keys, ",") != testKey+",ssh-rsa AAAAB3 ops@example" {
		t.Fatalf("meta-data: %d %v %+v\n%s", code, err, meta, body)
	}
	if code, body = fetch(from, seed+"user-data"); code != 200 || body != "#cloud-config\nhostname: \"node0\"\nrole: \"db\"\n" {
		t.Fatalf("user-data: %d\n%s", code, body)
	}
	if code, body = fetch(from, seed+"vendor-data"); code != 200 || body != "" {
		t.Fatalf("vendor-data: %d %q", code, body)
	}

	// Refused: another address, a wrong key, a file the profile lacks, an
	// unknown file, another job's path, a POST.
	key := strings.Split(strings.TrimPrefix(preseed, h.base+"/installer/v1/"+id+"/"), "/")[0]
	for name, tc := range map[string]struct {
		from, path string
		code       int
	}{
		"other address": {"127.0.0.1", "/installer/v1/" + id + "/" + key + "/preseed", http.StatusForbidden},
		"wrong key":     {from, "/installer/v1/" + id + "/" + strings.Repeat("0", 64) + "/preseed", http.StatusForbidden},
		"no kickstart":  {from, "/installer/v1/" + id + "/" + key + "/kickstart", http.StatusNotFound},
		"unknown file":  {from, "/installer/v1/" + id + "/" + key + "/passwd", http.StatusNotFound},
		"no such job":   {from, "/installer/v1/nosuch/" + key + "/preseed", http.StatusNotFound},
		"short path":    {from, "/installer/v1/" + id + "/preseed", http.StatusNotFound},
	} {
		if code, body := h.getFrom(t, tc.from, tc.path); code != tc.code {
			t.Errorf("%s: %d, want %d: %s", name, code, tc.code, body)
		}
	}
	if code, _ := post(t, from, preseed, url.Values{}); code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", code)
	}

	// The installer reports; the installed system's first boot reads its seed
	// again and reports success, the boot's last hop.
	inst := newInstaller(t, mac, script)
	if code, body := inst.report(t, url.Values{"state": {"running"}, "progress": {"5"}, "message": {"preseed"}}); code != 200 {
		t.Fatalf("running: %d %s", code, body)
	}
	if code, _ := fetch(from, seed+"user-data"); code != 200 {
		t.Fatalf("first boot's user-data: %d", code)
	}
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}, "message": {"first-boot"}}); code != 200 {
		t.Fatalf("succeeded: %d %s", code, body)
	}
	if code, _ := fetch(from, seed+"user-data"); code != http.StatusConflict {
		t.Fatalf("after success: %d, want 409", code)
	}
	var hops []*bootapiv1.Hop
	testkit.Eventually(t, "the first boot's report as the last hop", func() bool {
		s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		hops = s.GetSession().GetHops()
		return err == nil && len(hops) > 0 && hops[len(hops)-1].GetName() == "callback" && strings.Contains(hops[len(hops)-1].GetDetail(), "first-boot")
	})
	files := 0
	for _, hop := range hops {
		if hop.GetName() == "installer" {
			files += 1 + int(hop.GetRepeats())
			if strings.Contains(hop.GetDetail(), key) {
				t.Errorf("a hop shows the key: %v", hop)
			}
		}
	}
	if files < 5 {
		t.Errorf("%d installer hops, want 5 (preseed, meta-data, user-data twice, vendor-data): %v", files, hops)
	}
}

// TestInstallerTemplatesChecked: a template that lets a value change its
// document is refused when the profile is written, naming the field; so are
// bad SSH keys on profiles and machines.
func TestInstallerTemplatesChecked(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	ctx := context.Background()
	update := func(it *bootapiv1.InstallerTemplates) error {
		_, err := h.profiles.UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{
			Profile: &bootapiv1.Profile{Name: "debian-12", Installer: it}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"installer"}}})
		return err
	}
	for name, tc := range map[string]struct {
		it    *bootapiv1.InstallerTemplates
		field string
	}{
		"preseed question":    {&bootapiv1.InstallerTemplates{Preseed: "d-i {{.Machine.Hostname}} string x\n"}, "profile.installer.preseed"},
		"kickstart command":   {&bootapiv1.InstallerTemplates{Kickstart: "{{.Machine.Hostname}} --x\n"}, "profile.installer.kickstart"},
		"yaml key":            {&bootapiv1.InstallerTemplates{UserData: "{{.Machine.Hostname}}: x\n"}, "profile.installer.user_data"},
		"meta-data broken":    {&bootapiv1.InstallerTemplates{MetaData: "a: [\n"}, "profile.installer.meta_data"},
		"json inside string":  {&bootapiv1.InstallerTemplates{Ignition: `{"a": "{{.Machine.Hostname}}"}`}, "profile.installer.ignition"},
		"vendor-data syntax":  {&bootapiv1.InstallerTemplates{VendorData: "{{"}, "profile.installer.vendor_data"},
		"key not a key":       {&bootapiv1.InstallerTemplates{SshAuthorizedKeys: []string{"hello"}}, "profile.installer.ssh_authorized_keys[0]"},
		"key with a new line": {&bootapiv1.InstallerTemplates{SshAuthorizedKeys: []string{"ssh-rsa AAAA\nssh-rsa BBBB"}}, "profile.installer.ssh_authorized_keys[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			err := update(tc.it)
			if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != tc.field {
				t.Fatalf("got %v (field %q), want InvalidArgument on %s", err, apierr.FieldOf(err), tc.field)
			}
		})
	}
	if err := update(&bootapiv1.InstallerTemplates{UserData: "#cloud-config\nhostname: {{.Machine.Hostname}}\n"}); err != nil {
		t.Fatalf("a good template: %v", err)
	}
	// One file's mask path changes that file and keeps the others.
	r, err := h.profiles.UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{
		Profile:    &bootapiv1.Profile{Name: "debian-12", Installer: &bootapiv1.InstallerTemplates{Kickstart: "text\n"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"installer.kickstart"}}})
	if err != nil || r.GetProfile().GetInstaller().GetKickstart() != "text\n" || r.GetProfile().GetInstaller().GetUserData() == "" {
		t.Fatalf("installer.kickstart: %v %v", err, r.GetProfile().GetInstaller())
	}
	_, err = h.machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{
		Machine: &bootapiv1.Machine{Mac: mac, SshAuthorizedKeys: []string{"x"}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"ssh_authorized_keys"}}})
	if f := apierr.FieldOf(err); f != "machine.ssh_authorized_keys[0]" {
		t.Fatalf("machine key: %v (field %q)", err, f)
	}
}
