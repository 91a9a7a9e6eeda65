// SPDX-License-Identifier: GPL-2.0
/* Test module: exports a symbol used by the consumer module. */
#include <linux/module.h>
#include <linux/init.h>

int wslt_provider_add(int a, int b)
{
	return a + b;
}
EXPORT_SYMBOL_GPL(wslt_provider_add);

static int __init wslt_provider_init(void)
{
	pr_info("wslt_provider: loaded\n");
	return 0;
}

static void __exit wslt_provider_exit(void)
{
}

module_init(wslt_provider_init);
module_exit(wslt_provider_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("wsl-modules-action test: symbol provider");
