/* Unit tests of VM definitions, QEMU command lines and accel choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "qcow2.h"
#include "vm.h"
#include "netdev.h"

static int def_from(const char *text, struct vm_def *def, struct ferr *err)
{
	json_t *o = json_loads(text, 0, NULL);
	int rc;

	assert_non_null(o);
	rc = vmdef_from_json(o, def, err);
	json_decref(o);
	return rc;
}

static void test_valid(void **state)
{
	struct vm_def d;
	struct ferr err = { 0 };
	json_t *j;

	(void)state;
	assert_int_equal(
		def_from("{\"name\": \"vm1\", \"memory_mib\": 256, \"kernel\": "
			 "\"guest/vmlinuz\", \"initrd\": \"guest/initrd.gz\", "
			 "\"cmdline\": \"console=ttyS0 memload.mib=64\"}",
			 &d, &err),
		0);
	assert_string_equal(d.name, "vm1");
	assert_int_equal(d.memory_mib, 256);
	assert_int_equal(d.vcpus, 1);
	assert_int_equal(strlen(d.uuid), 36);
	assert_int_equal(d.uuid[14], '4'); /* version 4 */
	assert_int_equal(d.net, NET_NONE);
	/* round trip keeps the uuid */
	j = vmdef_to_json(&d);
	{
		struct vm_def d2;

		assert_int_equal(vmdef_from_json(j, &d2, &err), 0);
		assert_string_equal(d2.uuid, d.uuid);
		assert_string_equal(d2.cmdline, d.cmdline);
	}
	json_decref(j);
	assert_int_equal(
		def_from("{\"name\": \"d\", \"memory_mib\": 64, \"vcpus\": 2, "
			 "\"uuid\": \"0123abcd-0000-4000-8000-00000000beef\", "
			 "\"disk\": {\"path\": \"img/a.qcow2\", \"format\": "
			 "\"qcow2\"}, \"network\": \"user\"}",
			 &d, &err),
		0);
	assert_int_equal(d.disk_format, DISK_QCOW2);
	assert_int_equal(d.net, NET_USER);
	assert_string_equal(d.mac, "52:54:00:01:23:ab");
}

static void test_invalid(void **state)
{
	static const struct {
		const char *text;
		const char *needle;
	} cases[] = {
		{ "{\"memory_mib\": 64, \"kernel\": \"k\"}", "vm.name is required" },
		{ "{\"name\": \"UPPER\", \"memory_mib\": 64, \"kernel\": \"k\"}",
		  "not valid" },
		{ "{\"name\": \"a\", \"kernel\": \"k\"}", "memory_mib is required" },
		{ "{\"name\": \"a\", \"memory_mib\": \"64\", \"kernel\": \"k\"}",
		  "must be an integer" },
		{ "{\"name\": \"a\", \"memory_mib\": 1, \"kernel\": \"k\"}",
		  "between" },
		{ "{\"name\": \"a\", \"memory_mib\": -5, \"kernel\": \"k\"}",
		  "between" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"vcpus\": 0, "
		  "\"kernel\": \"k\"}",
		  "vm.vcpus" },
		{ "{\"name\": \"a\", \"memory_mib\": 64}", "kernel or a disk" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": "
		  "\"../etc/passwd\"}",
		  "relative to the shared-storage" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": "
		  "\"/boot/vmlinuz\"}",
		  "relative to the shared-storage" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": "
		  "\"k,if=none\"}",
		  "relative to the shared-storage" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"cmdline\": \"a\\nb\"}",
		  "printable" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"cmdline\": \"x\", "
		  "\"disk\": {\"path\": \"d\"}}",
		  "need vm.kernel" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"disk\": {\"path\": "
		  "\"d\", \"format\": \"vmdk\"}}",
		  "disk.format" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"disk\": {}}",
		  "disk.path is required" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": \"bridge\"}",
		  "vm.network" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": {\"mac\": \"52:54:00:00:00:01\"}}",
		  "vm.network.bridge is required" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": {\"bridge\": \"Lan!\"}}",
		  "vm.network.bridge \"Lan!\"" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": {\"bridge\": \"lan\", \"mac\": "
		  "\"53:54:00:00:00:01\"}}",
		  "not a unicast MAC" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": {\"bridge\": \"lan\", \"mac\": "
		  "\"52:54:00:00:00\"}}",
		  "not a unicast MAC" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": {\"bridge\": \"lan\", \"mtu\": 1500}}",
		  "unknown field \"mtu\"" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"network\": 7}",
		  "vm.network must be" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"uuid\": \"not-a-uuid\"}",
		  "vm.uuid" },
		{ "{\"name\": \"a\", \"memory_mib\": 64, \"kernel\": \"k\", "
		  "\"extra\": 1}",
		  "unknown field \"extra\"" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vm_def d;
		struct ferr err = { 0 };

		if (def_from(cases[i].text, &d, &err) != -1)
			fail_msg("case %zu accepted", i);
		assert_int_equal(err.code, FERR_INVALID);
		if (!strstr(err.msg, cases[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 cases[i].needle);
	}
}

static void test_paths(void **state)
{
	(void)state;
	assert_true(vmdef_path_is_safe("a"));
	assert_true(vmdef_path_is_safe("guest/vmlinuz-6.1+x"));
	assert_true(vmdef_path_is_safe("a/..b/c"));
	assert_false(vmdef_path_is_safe(""));
	assert_false(vmdef_path_is_safe("/a"));
	assert_false(vmdef_path_is_safe("a/../b"));
	assert_false(vmdef_path_is_safe(".."));
	assert_false(vmdef_path_is_safe("a//b"));
	assert_false(vmdef_path_is_safe("a/"));
	assert_false(vmdef_path_is_safe("./a"));
	assert_false(vmdef_path_is_safe("a,b"));
	assert_false(vmdef_path_is_safe("a b"));
	assert_false(vmdef_path_is_safe("a:b"));
}

/* Index of arg in argv, or -1. */
static int find_arg(const struct strv *a, const char *arg)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->v[i], arg))
			return (int)i;
	return -1;
}

static void test_argv(void **state)
{
	struct ferryd_config cfg = { 0 };
	struct vm_def d;
	struct vm_paths p;
	struct strv a = { 0 };
	struct ferr err = { 0 };
	const char *extra[] = { "-incoming", "defer", NULL };
	struct qemu_fds f = { .qmp = 3, .mqmp = 4, .console = 5, .kernel = 6,
			      .initrd = 7, .disk = -1, .backing = -1 };
	int i;

	(void)state;
	strcpy(cfg.state_dir, "/st");
	strcpy(cfg.shared_dir, "/sh");
	strcpy(cfg.qemu_binary, "/usr/bin/qemu-system-x86_64");
	assert_int_equal(
		def_from("{\"name\": \"vm1\", \"memory_mib\": 256, \"vcpus\": 2, "
			 "\"uuid\": \"0123abcd-0000-4000-8000-00000000beef\", "
			 "\"kernel\": \"k\", \"initrd\": \"i\", \"cmdline\": "
			 "\"console=ttyS0\", \"network\": \"user\"}",
			 &d, &err),
		0);
	assert_int_equal(vm_paths_get(&cfg, &d, &p, &err), 0);
	assert_string_equal(p.qmp,
			    "/st/run/0123abcd-0000-4000-8000-00000000beef.qmp");
	assert_int_equal(
		qemu_build_argv(&cfg, ACCEL_TCG, &d, &f, extra, &a, &err), 0);
	assert_string_equal(a.v[0], "/usr/bin/qemu-system-x86_64");
	assert_null(a.v[a.n]);
	i = find_arg(&a, "-accel");
	assert_true(i > 0);
	assert_string_equal(a.v[i + 1], "tcg");
	assert_int_equal(find_arg(&a, "-cpu"), -1);
	i = find_arg(&a, "-m");
	assert_string_equal(a.v[i + 1], "262136K"); /* TCG: 256 MiB - 8 KiB */
	/* QEMU opens nothing by name: the descriptors ferryd passes */
	i = find_arg(&a, "-kernel");
	assert_string_equal(a.v[i + 1], "/proc/self/fd/6");
	i = find_arg(&a, "-initrd");
	assert_string_equal(a.v[i + 1], "/proc/self/fd/7");
	i = find_arg(&a, "-chardev");
	assert_string_equal(a.v[i + 1], "socket,id=qmp,fd=3,server=on,wait=off");
	assert_int_equal(find_arg(&a, "-pidfile"), -1);
	assert_int_equal(find_arg(&a, "-drive"), -1);
	i = find_arg(&a, "-append");
	assert_string_equal(a.v[i + 1], "console=ttyS0");
	i = find_arg(&a, "-netdev");
	assert_string_equal(a.v[i + 1], "user,id=net0,restrict=on");
	i = find_arg(&a, "-sandbox");
	assert_non_null(strstr(a.v[i + 1], "spawn=deny"));
	assert_string_equal(a.v[a.n - 2], "-incoming");
	assert_string_equal(a.v[a.n - 1], "defer");
	strv_free(&a);
	assert_int_equal(
		qemu_build_argv(&cfg, ACCEL_KVM, &d, &f, NULL, &a, &err), 0);
	i = find_arg(&a, "-accel");
	assert_string_equal(a.v[i + 1], "kvm");
	i = find_arg(&a, "-cpu");
	assert_string_equal(a.v[i + 1], "host");
	i = find_arg(&a, "-m");
	assert_string_equal(a.v[i + 1], "262144K");
	assert_int_equal(find_arg(&a, "-object"), -1); /* no ram_dir */
	strv_free(&a);
	/* ram_dir: RAM is a shared file the size of -m, on the descriptor
	 * ferryd created */
	snprintf(cfg.ram_dir, sizeof(cfg.ram_dir), "/dev/shm/f");
	assert_int_equal(vm_paths_get(&cfg, &d, &p, &err), 0);
	assert_string_equal(p.ram,
			    "/dev/shm/f/0123abcd-0000-4000-8000-00000000beef.ram");
	f.ram = -1;
	assert_int_equal(
		qemu_build_argv(&cfg, ACCEL_TCG, &d, &f, NULL, &a, &err), -1);
	f.ram = 8;
	assert_int_equal(
		qemu_build_argv(&cfg, ACCEL_TCG, &d, &f, NULL, &a, &err), 0);
	i = find_arg(&a, "-object");
	assert_true(i > 0);
	assert_string_equal(a.v[i + 1],
			    "memory-backend-file,id=ram0,size=262136K,mem-path="
			    "/proc/self/fd/8,share=on");
	assert_string_equal(a.v[i + 3], "memory-backend=ram0");
	strv_free(&a);
}

static bool has_arg(const struct strv *a, const char *s)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->v[i], s))
			return true;
	return false;
}

/* Disks are -blockdev nodes on passed descriptors; a qcow2 disk's own
 * backing file is ignored ("backing": null) unless the definition names
 * one. */
static void test_argv_disks(void **state)
{
	struct ferryd_config cfg = { 0 };
	struct vm_def d;
	struct strv a = { 0 };
	struct ferr err = { 0 };
	struct qemu_fds f = { .qmp = 3, .mqmp = 4, .console = 5, .kernel = -1,
			      .initrd = -1, .disk = 6, .backing = -1 };

	(void)state;
	strcpy(cfg.state_dir, "/st");
	strcpy(cfg.shared_dir, "/sh");
	strcpy(cfg.qemu_binary, "/q");
	assert_int_equal(def_from("{\"name\": \"vm1\", \"memory_mib\": 256, "
				  "\"disk\": {\"path\": \"d.qcow2\", "
				  "\"format\": \"qcow2\"}}",
				  &d, &err),
			 0);
	assert_int_equal(qemu_build_argv(&cfg, ACCEL_TCG, &d, &f, NULL, &a,
					 &err),
			 0);
	assert_true(has_arg(&a, "fd=6,set=6"));
	assert_true(has_arg(&a, "{\"driver\":\"file\",\"filename\":"
				"\"/dev/fdset/6\",\"node-name\":\"disk-file\","
				"\"read-only\":false}"));
	assert_true(has_arg(&a, "{\"driver\":\"qcow2\",\"file\":\"disk-file\","
				"\"node-name\":\"disk0\",\"read-only\":false,"
				"\"backing\":null}"));
	assert_true(has_arg(&a, "virtio-blk-pci,drive=disk0"));
	assert_int_equal(find_arg(&a, "-drive"), -1);
	strv_free(&a);

	assert_int_equal(def_from("{\"name\": \"vm1\", \"memory_mib\": 256, "
				  "\"disk\": {\"path\": \"d.qcow2\", "
				  "\"format\": \"qcow2\", \"backing\": "
				  "\"base.img\"}}",
				  &d, &err),
			 0);
	assert_int_equal(d.backing_format, DISK_RAW);
	f.backing = 7;
	assert_int_equal(qemu_build_argv(&cfg, ACCEL_TCG, &d, &f, NULL, &a,
					 &err),
			 0);
	assert_true(has_arg(&a, "{\"driver\":\"file\",\"filename\":"
				"\"/dev/fdset/7\",\"node-name\":\"base-file\","
				"\"read-only\":true}"));
	assert_true(has_arg(&a, "{\"driver\":\"raw\",\"file\":\"base-file\","
				"\"node-name\":\"base\",\"read-only\":true}"));
	assert_true(has_arg(&a, "{\"driver\":\"qcow2\",\"file\":\"disk-file\","
				"\"node-name\":\"disk0\",\"read-only\":false,"
				"\"backing\":\"base\"}"));
	strv_free(&a);
	/* the definition's own rules for backing images */
	assert_int_equal(def_from("{\"name\": \"v\", \"memory_mib\": 256, "
				  "\"disk\": {\"path\": \"d\", \"backing\": "
				  "\"b\"}}", &d, &err),
			 -1);
	assert_non_null(strstr(err.msg, "needs vm.disk.format qcow2"));
	assert_int_equal(def_from("{\"name\": \"v\", \"memory_mib\": 256, "
				  "\"disk\": {\"path\": \"d\", \"format\": "
				  "\"qcow2\", \"backing\": \"../b\"}}", &d, &err),
			 -1);
}

/* Files are opened below the shared dir: a symlink inside it that leads
 * out is refused, one that stays inside is followed. */
static void test_shared_open(void **state)
{
	char dir[] = "/tmp/ferry-shared-XXXXXX", path[256], out[256], rel[64];
	struct ferr err = { 0 };
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/img", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(out, sizeof(out), "%s.secret", dir);
	fd = open(out, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/inside", dir);
	assert_int_equal(symlink("img", path), 0);
	snprintf(path, sizeof(path), "%s/abs", dir);
	assert_int_equal(symlink(out, path), 0);
	snprintf(path, sizeof(path), "%s/rel", dir);
	snprintf(rel, sizeof(rel), "../%s", strrchr(out, '/') + 1);
	assert_int_equal(symlink(rel, path), 0);
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(symlink("/tmp", path), 0);

	fd = shared_open(dir, "img", O_RDWR, &err);
	assert_true(fd >= 0);
	close(fd);
	fd = shared_open(dir, "inside", O_RDONLY, &err);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(shared_open(dir, "abs", O_RDONLY, &err), -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	assert_non_null(strstr(err.msg, "leads out of the shared dir"));
	assert_int_equal(shared_open(dir, "rel", O_RDONLY, &err), -1);
	assert_int_equal(shared_open(dir, "sub/x", O_RDONLY, &err), -1);
	assert_int_equal(shared_open(dir, "missing", O_RDONLY, &err), -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
	assert_int_equal(shared_open(dir, "../img", O_RDONLY, &err), -1);
	assert_int_equal(shared_open(dir, ".", O_RDONLY, &err), -1);
	unlink(out);
	assert_int_equal(rmtree(dir, &err), 0);
}

static void test_qcow2_header(void **state)
{
	unsigned char h[QCOW2_V3_HEADER_MIN] = { 0x51, 0x46, 0x49, 0xfb,
						 0, 0, 0, 3 };
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(qcow2_header_check(h, sizeof(h), &err), 0);
	h[QCOW2_OFF_INCOMPAT + 7] = 1 << 2; /* external data file */
	assert_int_equal(qcow2_header_check(h, sizeof(h), &err), -1);
	assert_non_null(strstr(err.msg, "external data file"));
	h[7] = 2; /* version 2 has no such field */
	assert_int_equal(qcow2_header_check(h, QCOW2_V2_HEADER_LEN, &err), 0);
	h[7] = 4;
	assert_int_equal(qcow2_header_check(h, sizeof(h), &err), -1);
	h[7] = 3;
	assert_int_equal(qcow2_header_check(h, 80, &err), -1);
	h[0] = 0;
	assert_int_equal(qcow2_header_check(h, sizeof(h), &err), -1);
	assert_non_null(strstr(err.msg, "not a qcow2"));
}

static void test_accel(void **state)
{
	char cpuinfo[] = "/tmp/ferry-cpuinfo-XXXXXX";
	int fd = mkstemp(cpuinfo);
	const char *no_virt = "processor : 0\nflags : fpu sse2 hypervisor\n";
	enum accel_mode m = ACCEL_AUTO;
	struct ferr err = { 0 };

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, no_virt, strlen(no_virt)),
			 (ssize_t)strlen(no_virt));
	close(fd);
	/* no /dev/kvm: TCG */
	assert_int_equal(accel_resolve(ACCEL_AUTO, "/nonexistent/kvm", cpuinfo,
				       &m, &err),
			 0);
	assert_int_equal(m, ACCEL_TCG);
	/* a device that is not KVM (paravirtual-like: no vmx): TCG */
	assert_int_equal(
		accel_resolve(ACCEL_AUTO, "/dev/null", cpuinfo, &m, &err), 0);
	assert_int_equal(m, ACCEL_TCG);
	/* explicit kvm that does not work is an error */
	assert_int_equal(accel_resolve(ACCEL_KVM, "/nonexistent/kvm", cpuinfo,
				       &m, &err),
			 -1);
	assert_int_equal(err.code, FERR_UNAVAILABLE);
	assert_int_equal(
		accel_resolve(ACCEL_TCG, "/dev/kvm", cpuinfo, &m, &err), 0);
	assert_int_equal(m, ACCEL_TCG);
	unlink(cpuinfo);
}

#define VM_BASE "\"name\": \"vm1\", \"memory_mib\": 64, \"kernel\": \"k\""
#define SIG "\"signature\": \"" \
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" \
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\""

static void test_constraints(void **state)
{
	static const char *const bad[] = {
		"{" SIG ", \"x\": 1}",                       /* unknown field */
		"{\"attest\": \"maybe\", " SIG "}",
		"{\"destinations\": {}, " SIG "}",
		"{\"destinations\": {\"site\": []}, " SIG "}",
		"{\"destinations\": {\"site\": [\"EU\"]}, " SIG "}",
		"{\"destinations\": {\"Site\": [\"eu\"]}, " SIG "}",
		"{\"destinations\": {\"site\": \"eu\"}, " SIG "}",
		"{\"roles\": [], " SIG "}",
		"{\"roles\": [1], " SIG "}",
		"{\"roles\": \"admin\", " SIG "}",
		"{\"roles\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"], " SIG "}",
		"{\"attest\": \"required\"}",              /* unsigned */
		"{\"signature\": \"00\"}",
		("{\"signature\": \"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"
		 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}"),
		"[]",
	};
	char text[2048];
	struct vm_def d;
	struct ferr err = { 0 };
	json_t *j, *c;

	(void)state;
	snprintf(text, sizeof(text),
		 "{" VM_BASE ", \"constraints\": {\"destinations\": "
		 "{\"site\": [\"eu\", \"de\"], \"tier\": [\"gold\"]}, "
		 "\"attest\": \"required\", \"roles\": [\"operator\"], " SIG
		 "}}");
	assert_int_equal(def_from(text, &d, &err), 0);
	assert_true(d.cons.present && d.cons.attest);
	assert_int_equal(d.cons.ndest, 3);
	assert_string_equal(d.cons.dest[1].key, "site");
	assert_string_equal(d.cons.dest[1].value, "de");
	assert_int_equal(d.cons.nroles, 1);
	assert_int_equal(d.cons.signature[0], 0x01);
	/* the definition carries them on, and reads back the same */
	j = vmdef_to_json(&d);
	c = json_object_get(j, "constraints");
	assert_non_null(c);
	assert_int_equal(json_array_size(json_object_get(
				 json_object_get(c, "destinations"), "site")),
			 2);
	{
		struct vm_def d2;

		assert_int_equal(vmdef_from_json(j, &d2, &err), 0);
		assert_memory_equal(&d.cons, &d2.cons, sizeof(d.cons));
	}
	json_decref(j);
	/* what is signed has no signature */
	c = vm_constraints_to_json(&d.cons, false);
	assert_null(json_object_get(c, "signature"));
	assert_string_equal(json_string_value(json_object_get(c, "attest")),
			    "required");
	json_decref(c);
	/* without constraints: nothing */
	snprintf(text, sizeof(text), "{" VM_BASE "}");
	assert_int_equal(def_from(text, &d, &err), 0);
	assert_false(d.cons.present);
	assert_null(vm_constraints_to_json(&d.cons, true));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "{" VM_BASE ", \"constraints\": %s}",
			 bad[i]);
		err.code = 0;
		assert_int_equal(def_from(text, &d, &err), -1);
		assert_int_equal(err.code, FERR_INVALID);
		assert_non_null(strstr(err.msg, "vm.constraints"));
	}
}

/* A bridged VM: the MAC is kept (lowercased) and round-trips through
 * JSON, as the prepare body carries it; QEMU gets the tap as a passed
 * descriptor. */
static void test_bridge(void **state)
{
	struct ferryd_config cfg = { 0 };
	struct vm_def d, d2;
	struct strv a = { 0 };
	struct ferr err = { 0 };
	struct qemu_fds f = { .qmp = 3, .mqmp = 4, .console = 5, .kernel = 6,
			      .initrd = -1, .disk = -1, .backing = -1,
			      .tap = 7 };
	struct tap tap;
	json_t *j;
	int i;

	(void)state;
	strcpy(cfg.state_dir, "/st");
	strcpy(cfg.shared_dir, "/sh");
	strcpy(cfg.qemu_binary, "/usr/bin/qemu-system-x86_64");
	assert_int_equal(
		def_from("{\"name\": \"vm1\", \"memory_mib\": 128, \"kernel\": "
			 "\"k\", \"network\": {\"bridge\": \"lan\", \"mac\": "
			 "\"52:54:00:AA:0b:01\"}}",
			 &d, &err),
		0);
	assert_int_equal(d.net, NET_BRIDGE);
	assert_string_equal(d.bridge, "lan");
	assert_string_equal(d.mac, "52:54:00:aa:0b:01");
	j = vmdef_to_json(&d);
	assert_int_equal(vmdef_from_json(j, &d2, &err), 0);
	json_decref(j);
	assert_int_equal(d2.net, NET_BRIDGE);
	assert_string_equal(d2.mac, d.mac);
	assert_string_equal(d2.bridge, "lan");
	assert_int_equal(qemu_build_argv(&cfg, ACCEL_TCG, &d, &f, NULL, &a, &err),
			 0);
	i = find_arg(&a, "-netdev");
	assert_true(i > 0);
	assert_string_equal(a.v[i + 1], "tap,id=net0,fd=7");
	assert_non_null(strstr(a.v[i + 3], "mac=52:54:00:aa:0b:01"));
	strv_free(&a);
	/* without a mac: the uuid-derived one */
	assert_int_equal(
		def_from("{\"name\": \"vm2\", \"memory_mib\": 128, \"kernel\": "
			 "\"k\", \"uuid\": \"0123abcd-0000-4000-8000-00000000beef\", "
			 "\"network\": {\"bridge\": \"lan\"}}",
			 &d, &err),
		0);
	assert_string_equal(d.mac, "52:54:00:01:23:ab");
	/* a host without that bridge refuses to start it, naming it */
	strcpy(cfg.host, "h1");
	assert_int_equal(vm_net_open(&cfg, &d, &tap, &err), -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	assert_non_null(strstr(err.msg, "no bridge \"lan\""));
	assert_int_equal(tap.fd, -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),   cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_paths),   cmocka_unit_test(test_argv),
		cmocka_unit_test(test_accel),
		cmocka_unit_test(test_bridge),
		cmocka_unit_test(test_constraints),
		cmocka_unit_test(test_argv_disks),
		cmocka_unit_test(test_shared_open),
		cmocka_unit_test(test_qcow2_header),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
