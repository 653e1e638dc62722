// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * kexec-auto VM tests: hang the running kernel on purpose, the way a broken
 * driver does, to prove that a trial boot's watchdog brings the machine back.
 *
 *   insmod ka_hang.ko            spin with preemption off: a soft lockup
 *                                (timer interrupts still run, softdog fires)
 *   insmod ka_hang.ko irqs_off=1 spin with interrupts off: a hard lockup
 *                                (only a hardware watchdog can fire)
 *
 * Test code only: never load this on a machine you care about.
 */
#include <linux/delay.h>
#include <linux/init.h>
#include <linux/irqflags.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/printk.h>

static int irqs_off;
module_param(irqs_off, int, 0);
MODULE_PARM_DESC(irqs_off, "1: spin with interrupts off (hard lockup), 0: with preemption off (soft lockup)");

static int __init ka_hang_init(void)
{
	pr_emerg("ka_hang: hanging this CPU with %s\n", irqs_off ? "interrupts off" : "preemption off");
	/*
	 * Let the line reach the serial console first: when another task
	 * holds the console (systemd writing its boot status there), printk
	 * leaves the printing to it, and that task never runs again.
	 */
	msleep(2000);
	if (irqs_off)
		local_irq_disable();
	else
		preempt_disable();
	for (;;)
		cpu_relax();
	return 0;
}
module_init(ka_hang_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kexec-auto test module: hang the kernel on purpose");
