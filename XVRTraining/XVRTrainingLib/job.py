"""The background training: a running ``xvrcore train`` process, its events turned into table rows, status
lines and, at the end, the model.
"""

import math
import pathlib
import time

from slicer.i18n import tr as _

from .plot import appendRow, number, showChart

__all__ = ["TrainingJob"]


class TrainingJob:
    """A running ``xvrcore train`` process: its command, its events turned into tables, cancel/poll.

    Holds MRML table nodes (``progressTable``: iteration, loss, NCC; ``validationTable``: iteration,
    mTRE, dGeo) and a chart that plots them; never touches widgets. ``jobFolder``
    (``XVRCoreLib.job_files.JobFolder``) holds the inputs and the cancel file: removed when the job ends,
    kept after a failure (``keptFolder`` says where, and so does the final status).
    """

    def __init__(self, command, outputDirectory, progressTable=None, validationTable=None, chart=None, env=None,
                 jobFolder=None):
        from XVRCoreLib.processes import SlicerJobRunner  # no console window; stops the whole process tree

        self.command = [str(c) for c in command]
        self.outputDirectory = pathlib.Path(outputDirectory)
        self.jobFolder = jobFolder
        self.keptFolder = None
        folder = jobFolder.path if jobFolder is not None else self.outputDirectory
        self.runner = SlicerJobRunner(self.command, folder, env=env)
        self.progressTable = progressTable
        self.validationTable = validationTable
        self.chart = chart
        self.cancelRequested = False
        self.fraction = 0.0
        self.model = None
        self.checkpoint = None
        self.returncode = None
        self.events = []

    def start(self) -> "TrainingJob":
        self.runner.start()
        return self

    @property
    def running(self) -> bool:
        return self.returncode is None and self.runner.process is not None

    def cancel(self) -> None:
        """Ask the process to save a checkpoint and stop (it polls the cancel file); kill it if it hangs."""
        self.cancelRequested = True
        self.runner.cancel()

    def showChart(self) -> None:
        """Show the job's chart in the view layout (Slicer only)."""
        showChart(self.chart)

    def poll(self) -> dict:
        """Events and log lines since the last call, applied to the tables; see XVRTrainingWidget.onPoll."""
        update = self.runner.poll()
        status = None
        for event in update.events:
            self.events.append(event)
            status = self._apply(event) or status
        if self.cancelRequested and update.returncode is None:
            self.runner.terminate(grace_s=60.0)  # only if it ignored the cancel file for a minute
        if update.returncode is not None:
            self.returncode = update.returncode
            self._finishFolder()
            status = self._finalStatus()
        return {"events": update.events, "log": update.log, "fraction": self.fraction, "status": status,
                "finished": self.returncode is not None, "returncode": self.returncode, "model": self.model}

    def _apply(self, event):
        """Take one event into the tables and the job's state; returns its status line, if it has one."""
        kind = event.get("event")
        if kind == "progress":
            self.fraction = float(event.get("fraction") or 0.0)
            appendRow(self.progressTable, [event.get("done", 0), event.get("loss"), event.get("ncc")])
            status = _("Iteration {done}: loss {loss:.3f}").format(done=event.get("done", 0), loss=number(event.get("loss")))
            if math.isfinite(number(event.get("ncc"))):  # no DRR at the prediction while on the pose loss alone
                status += ", " + _("NCC {ncc:.3f}").format(ncc=number(event.get("ncc")))
            if event.get("eta_s") is not None:
                status += " " + _("({eta:.0f} s left)").format(eta=event.get("eta_s"))
            return status
        if kind == "validation":
            appendRow(self.validationTable, [event.get("iteration", 0), event.get("mtre_mm"), event.get("dgeo_mm")])
            return _("Validation at iteration {i}: mTRE {m:.1f} mm").format(
                i=event.get("iteration", 0), m=number(event.get("mtre_mm")))
        if kind == "checkpoint":
            self.checkpoint = event.get("path")
        elif kind in ("finished", "cancelled"):
            self.model = event.get("model")
            self.checkpoint = event.get("checkpoint") or self.checkpoint
        return None

    def _finishFolder(self) -> None:
        """Remove the job's inputs, or keep them after a failure (or when the user keeps temporary files)."""
        from xvrcore.io.events import EXIT_CANCELLED

        if self.jobFolder is not None:
            self.keptFolder = self.jobFolder.finish(failed=self.returncode not in (0, EXIT_CANCELLED))

    def _finalStatus(self) -> str:
        from xvrcore.io.events import EXIT_CANCELLED

        kept = (" " + _("Job files kept in {folder}.").format(folder=self.keptFolder)) if self.keptFolder else ""
        if self.returncode == 0:
            self.fraction = 1.0
            return _("Training finished; model in {model}").format(model=self.model or self.outputDirectory) + kept
        if self.returncode == EXIT_CANCELLED:
            return _("Training cancelled; checkpoint saved in {path}. Resume continues it.").format(
                path=self.checkpoint or self.outputDirectory) + kept
        return _("Training failed (exit code {code}); see the log. Its job files are kept in {folder} "
                 "(send them with a report).").format(code=self.returncode, folder=self.keptFolder) if self.keptFolder \
            else _("Training failed (exit code {code}); see the log.").format(code=self.returncode)

    def wait(self, timeout=None) -> dict:
        """Block until the process ends (tests, scripts); returns the final poll."""
        self.runner.process.wait(timeout=timeout)
        if self.runner._reader is not None:
            self.runner._reader.join(timeout=5)
        result = self.poll()
        while not result["finished"]:
            time.sleep(0.05)
            more = self.poll()
            more["events"] = result["events"] + more["events"]
            more["log"] = result["log"] + more["log"]
            result = more
        return result
