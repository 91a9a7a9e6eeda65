// SPDX-License-Identifier: GPL-2.0
/* Test module that does not compile (on purpose). */
#include <linux/module.h>

static int __init wslt_broken_init(void)
{
	return this_function_does_not_exist(42) + missing_variable;
}

module_init(wslt_broken_init);
MODULE_LICENSE("GPL");
