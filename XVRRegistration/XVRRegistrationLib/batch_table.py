"""The batch table of the registration panel: one row per X-ray with a result or a failure (its message), sorted
as the parameter node's ``batchSort`` says (its combo box), following the
current X-ray both ways, with "Mark checked" and "Next to check".

Qt code only (``qt`` imported inside the methods); the rows are :mod:`.batch_rows`'s, read from the scene
(so a reloaded scene shows the same table). The table is no bound widget: its selection signal is ours,
blocked while the table is filled or follows the parameter node.
"""

import math

import slicer
from slicer.i18n import tr as _

from . import batch_rows
from .panel import PanelSection

__all__ = ["COLUMNS", "BatchTable"]

COLUMNS = ("name", "status", "similarity", "quality", "checked", "message")


class BatchTable(PanelSection):
    """Fills ``ui.resultsTable`` from the scene and keeps it and the current X-ray in step."""

    def __init__(self, ui, logic, parameterNode, log) -> None:
        PanelSection.__init__(self, ui, logic, parameterNode, log)
        self._shown = None  # (rows, sort key, current id) last shown: the parameter observer fires often
        self.rowIds = []  # the node ID of each row, top to bottom

    def connect(self) -> None:
        table = self.ui.resultsTable
        table.setColumnCount(len(COLUMNS))
        table.setHorizontalHeaderLabels([_("X-ray"), _("Status"), _("Similarity"), _("P(<1 mm)"), _("Checked"),
                                         _("Message")])
        table.connect("itemSelectionChanged()", self.onRowSelected)
        self.ui.nextToCheckButton.connect("clicked()", self.onNextToCheck)
        self.ui.markCheckedButton.connect("clicked()", self.onMarkChecked)

    # -- the parameter node to the table ------------------------------------------------------------------------

    def update(self, force: bool = False) -> None:
        """Show the scene's rows in the chosen order, the current X-ray's row selected."""
        p = self._parameterNode()
        if p is None:
            return
        rows = batch_rows.sortedRows(batch_rows.batchRows(slicer.mrmlScene), p.batchSort.value)
        current = p.xrayVolume.GetID() if p.xrayVolume is not None else None
        state = (repr(rows), p.batchSort, current)
        if state == self._shown and not force:
            return
        self._shown = state
        table = self.ui.resultsTable
        blocked = table.blockSignals(True)
        try:
            self._fill(table, rows)
            table.clearSelection()
            if current in self.rowIds:
                table.selectRow(self.rowIds.index(current))
        finally:
            table.blockSignals(blocked)
        self.ui.markCheckedButton.enabled = current in self.rowIds
        self.ui.nextToCheckButton.enabled = batch_rows.nextToCheck(rows, current) is not None

    def _fill(self, table, rows) -> None:
        import qt

        table.setRowCount(len(rows))
        self.rowIds = [row["id"] for row in rows]
        status = {"pass": (_("pass"), "green"), "check": (_("CHECK"), "red"), "failed": (_("failed"), "red")}
        for r, row in enumerate(rows):
            text, colour = status[row["status"]]
            cells = [row["name"], text, _measure(row["similarity"], 3), _measure(row["p_submillimetre"], 2),
                     _("yes") if row["checked"] else "", row["message"]]
            for c, value in enumerate(cells):
                item = qt.QTableWidgetItem(value)
                if c == 1:
                    item.setForeground(qt.QBrush(qt.QColor(colour)))
                if c == 5 and value:
                    item.setToolTip(value)
                table.setItem(r, c, item)

    # -- the user's actions -------------------------------------------------------------------------------------

    def _select(self, nodeId) -> None:
        node = slicer.mrmlScene.GetNodeByID(nodeId) if nodeId else None
        if node is not None:
            self._parameterNode().xrayVolume = node  # the parameter observer shows it and updates the table

    def onRowSelected(self) -> None:
        rows = sorted({index.row() for index in self.ui.resultsTable.selectedIndexes()})
        if len(rows) == 1 and rows[0] < len(self.rowIds):
            self._select(self.rowIds[rows[0]])

    def onNextToCheck(self) -> None:
        p = self._parameterNode()
        current = p.xrayVolume.GetID() if p.xrayVolume is not None else None
        self._select(batch_rows.nextToCheck(batch_rows.batchRows(slicer.mrmlScene), current))

    def onMarkChecked(self) -> None:
        xray = self._parameterNode().xrayVolume
        if xray is not None and xray.GetID() in self.rowIds:
            batch_rows.markChecked(xray)
            self.update(force=True)

    def recordFailures(self, failed) -> int:
        """Keep each failed X-ray's message on its node (its row shows it); ``failed``: ``(node, message)`` of the
        job's poll. Returns how many were recorded."""
        recorded = 0
        for node, message in failed:
            if slicer.mrmlScene.GetNodeByID(node.GetID()) is node:
                batch_rows.recordFailure(node, message)
                recorded += 1
        return recorded


def _measure(value, decimals) -> str:
    return "" if math.isnan(value) else f"{value:.{decimals}f}"  # NaN (a failure): empty
