"""The kernel manager `mlvs run` gives papermill: a kernel forked warm from its side process.

Named by its import path in the kernel config (`ipc_kernel_config(template_dir)`), so that
jupyter_client is imported only when a notebook runs. See `mlvs.backends.kernel`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from traitlets import Unicode

from mlvs.backends.kernel import ForkedKernel, ask_template


class WarmProvisioner(LocalProvisioner):
    """Starts the kernel by asking the template in `template_dir`; cold when it cannot."""

    template_dir = Unicode("", config=True, help="where the side process's template listens")

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        env = dict(kwargs.get("env") or os.environ)
        env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            pid = await asyncio.to_thread(ask_template, self.template_dir, cmd, env, cwd)
        except (OSError, ValueError, KeyError) as exc:
            self.log.debug("kernel started cold: %s", exc)
            return await super().launch_kernel(cmd, **kwargs)
        self.process = ForkedKernel(pid)  # type: ignore[assignment]  # Popen's interface, duck-typed
        self.pid = pid
        self.pgid = pid  # the template started a session of its own, as Popen would have
        self.cwd = cwd
        return self.connection_info


class WarmKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose kernels come from the side process's template when there is one."""

    template_dir = Unicode("", config=True, help="where the side process's template listens")

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        if self.provisioner is None and self.template_dir:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = WarmProvisioner(
                kernel_id=self.kernel_id,
                kernel_spec=self.kernel_spec,
                parent=self,
                template_dir=self.template_dir,
            )
        return await super()._async_pre_start_kernel(**kw)
