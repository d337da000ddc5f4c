"""The background registration: ``xvrcore register`` processes run one after the other, their events turned
into progress, status lines and finished results.
"""

import pathlib
import time

from slicer.i18n import tr as _

__all__ = ["RegistrationJob"]

STATUS_EVENTS = ("progress", "input_done", "input_skipped", "input_failed")  # the events that set the status line


class RegistrationJob:
    """``xvrcore register`` processes run one after the other (one per group of X-rays with the same frame
    choice and geometry overrides), with their events; cancel stops the running one and the rest.

    ``poll()`` returns, among others, ``results``: ``(xrayNode, resultJson)`` pairs finished since the last
    call. ``inputs[i]`` maps the output name of each X-ray of command ``i`` (unique in that command, as
    ``xvrcore.registration.inputs.name_inputs`` gives it; events carry it as ``stem``) to ``(node, SOP
    Instance UID)``: a result goes to its X-ray by that name and only if the event's SOP Instance UID is
    the node's, never by file name (two ``IM000001`` of different series are usual). ``jobFolder``
    (``XVRCoreLib.job_files.JobFolder``, at ``jobDirectory``) holds the inputs: removed when the job ends,
    kept after a failure (``keptFolder`` says where, and so does the final status). Never touches widgets.
    """

    def __init__(self, commands, jobDirectory, inputs, env=None, jobFolder=None):
        self.commands = [[str(c) for c in command] for command in commands]
        self.jobDirectory = pathlib.Path(jobDirectory)
        self.jobFolder = jobFolder
        self.keptFolder = None
        self.inputs = [dict(byName) for byName in inputs]
        self.env = env
        self.runner = None
        self.index = -1
        self.cancelRequested = False
        self.returncodes = []
        self.failures = []
        self.done = []
        self.fraction = 0.0
        self.finished = False

    def start(self) -> "RegistrationJob":
        self._next()
        return self

    def _next(self) -> None:
        from XVRCoreLib.processes import SlicerJobRunner  # no console window; stops the whole process tree

        self.index += 1
        if self.index >= len(self.commands) or self.cancelRequested:
            self.runner = None
            self.finished = True
            if self.jobFolder is not None:  # its inputs: removed, or kept after a failure
                self.keptFolder = self.jobFolder.finish(failed=self.failed)
            return
        self.runner = SlicerJobRunner(self.commands[self.index], self.jobDirectory, env=self.env)
        self.runner.start()

    @property
    def running(self) -> bool:
        return not self.finished

    @property
    def failed(self) -> bool:
        """Whether a process ended with an error (a cancel is no failure)."""
        from xvrcore.io.events import EXIT_CANCELLED

        return any(code not in (0, EXIT_CANCELLED) for code in self.returncodes)

    def nodeOf(self, event):
        """The X-ray node an event is about (its output name in the running command, same SOP Instance UID)."""
        byName = self.inputs[self.index] if 0 <= self.index < len(self.inputs) else {}
        node, uid = byName.get(event.get("stem"), (None, None))
        if node is None or (event.get("sop_instance_uid") or None) != (uid or None):
            return None
        return node

    def cancel(self) -> None:
        self.cancelRequested = True
        if self.runner is not None:
            self.runner.cancel()

    def poll(self) -> dict:
        """What happened since the last call: ``results`` and ``failed`` (``(X-ray node, JSON path | error)``),
        ``log``, ``events``, ``status``, ``fraction``, ``finished``."""
        results, failed, log, events, status = [], [], [], [], None
        if self.runner is None:
            return {"results": results, "failed": failed, "log": log, "events": events, "status": status,
                    "fraction": self.fraction, "finished": self.finished}
        update = self.runner.poll()
        log += update.log
        for event in update.events:
            events.append(event)
            if event.get("event") in STATUS_EVENTS:
                status = self._apply(event, results, failed, log)
        if self.cancelRequested and update.returncode is None:
            self.runner.terminate(grace_s=20.0)
        if update.returncode is not None:
            self.returncodes.append(update.returncode)
            self.fraction = (self.index + 1) / max(1, len(self.commands))
            self._next()
            if self.finished:
                status = self._finalStatus()
        return {"results": results, "failed": failed, "log": log, "events": events, "status": status,
                "fraction": self.fraction, "finished": self.finished}

    def _apply(self, event, results, failed, log):
        """Take one of the STATUS_EVENTS into the job's state (and ``results``, ``failed``, ``log``); returns its
        status line. The X-ray is found while its command runs (:meth:`nodeOf`)."""
        kind = event.get("event")
        if kind == "progress":
            self.fraction = (self.index + float(event.get("fraction", 0.0))) / max(1, len(self.commands))
            status = _("{input}: stage {stage}, iteration {iteration}, similarity {similarity:.3f}").format(
                input=event.get("input"), stage=event.get("stage", 0) + 1, iteration=event.get("iteration", 0),
                similarity=float(event.get("similarity") or 0.0))
            if event.get("attempt", 1) > 1:  # the first result looked wrong: a wider search
                status = _("{status} (retry {retry})").format(status=status, retry=event["attempt"] - 1)
            return status
        if kind in ("input_done", "input_skipped"):
            node = self.nodeOf(event)
            if node is None:
                log.append(_("{input}: a result for no X-ray of this registration; left in the folder.").format(
                    input=event.get("input")))
            elif event.get("json"):
                results.append((node, event["json"]))
                self.done.append(node)
            return _("{input}: registered").format(input=event.get("input"))
        self.failures.append(event.get("error"))  # input_failed
        node = self.nodeOf(event)
        if node is not None:
            failed.append((node, event.get("error")))
        log.append(event.get("error", ""))
        return event.get("error")

    def _finalStatus(self) -> str:
        status = self._outcome()
        if self.keptFolder is not None:
            status += " " + (_("Its job files are kept in {folder} (send them with a report).") if self.failed
                             else _("Job files kept in {folder}.")).format(folder=self.keptFolder)
        return status

    def _outcome(self) -> str:
        from xvrcore.io.events import EXIT_CANCELLED

        if self.cancelRequested or EXIT_CANCELLED in self.returncodes:
            return _("Cancelled: {n} X-ray(s) registered; register again to do the rest.").format(n=len(self.done))
        if any(code != 0 for code in self.returncodes):
            return _("Finished with errors: {n} registered, {f} failed (see the log).").format(
                n=len(self.done), f=len(self.failures))
        return _("Registered {n} X-ray(s).").format(n=len(self.done))

    def wait(self, timeout=None) -> dict:
        """Block until every process ended (tests and scripts); returns the polls merged."""
        deadline = None if timeout is None else time.monotonic() + timeout
        merged = {"results": [], "log": [], "events": [], "status": None}
        while True:
            update = self.poll()
            for key in ("results", "log", "events"):
                merged[key] += update[key]
            merged["status"] = update["status"] or merged["status"]
            if update["finished"]:
                merged.update(fraction=update["fraction"], finished=True)
                return merged
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the registration did not finish in time")
            time.sleep(0.05)
