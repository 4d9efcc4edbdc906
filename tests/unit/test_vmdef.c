/* Unit tests of VM definitions, QEMU command lines and accel choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vm.h"

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
		qemu_build_argv(&cfg, ACCEL_TCG, &d, &p, extra, &a, &err), 0);
	assert_string_equal(a.v[0], "/usr/bin/qemu-system-x86_64");
	assert_null(a.v[a.n]);
	i = find_arg(&a, "-accel");
	assert_true(i > 0);
	assert_string_equal(a.v[i + 1], "tcg");
	assert_int_equal(find_arg(&a, "-cpu"), -1);
	i = find_arg(&a, "-m");
	assert_string_equal(a.v[i + 1], "262136K"); /* TCG: 256 MiB - 8 KiB */
	i = find_arg(&a, "-kernel");
	assert_string_equal(a.v[i + 1], "/sh/k");
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
		qemu_build_argv(&cfg, ACCEL_KVM, &d, &p, NULL, &a, &err), 0);
	i = find_arg(&a, "-accel");
	assert_string_equal(a.v[i + 1], "kvm");
	i = find_arg(&a, "-cpu");
	assert_string_equal(a.v[i + 1], "host");
	i = find_arg(&a, "-m");
	assert_string_equal(a.v[i + 1], "262144K");
	assert_int_equal(find_arg(&a, "-object"), -1); /* no ram_dir */
	strv_free(&a);
	/* ram_dir: RAM is a shared file the size of -m */
	snprintf(cfg.ram_dir, sizeof(cfg.ram_dir), "/dev/shm/f");
	assert_int_equal(vm_paths_get(&cfg, &d, &p, &err), 0);
	assert_string_equal(p.ram,
			    "/dev/shm/f/0123abcd-0000-4000-8000-00000000beef.ram");
	assert_int_equal(
		qemu_build_argv(&cfg, ACCEL_TCG, &d, &p, NULL, &a, &err), 0);
	i = find_arg(&a, "-object");
	assert_true(i > 0);
	assert_string_equal(a.v[i + 1],
			    "memory-backend-file,id=ram0,size=262136K,mem-path="
			    "/dev/shm/f/0123abcd-0000-4000-8000-00000000beef.ram,"
			    "share=on");
	assert_string_equal(a.v[i + 3], "memory-backend=ram0");
	strv_free(&a);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),   cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_paths),   cmocka_unit_test(test_argv),
		cmocka_unit_test(test_accel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
