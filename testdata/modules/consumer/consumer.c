// SPDX-License-Identifier: GPL-2.0
/* Test module: uses a symbol exported by the provider module. */
#include <linux/module.h>
#include <linux/init.h>

int wslt_provider_add(int a, int b);

static int __init wslt_consumer_init(void)
{
	pr_info("wslt_consumer: 2 + 3 = %d\n", wslt_provider_add(2, 3));
	return 0;
}

static void __exit wslt_consumer_exit(void)
{
}

module_init(wslt_consumer_init);
module_exit(wslt_consumer_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("wsl-modules-action test: symbol consumer");
