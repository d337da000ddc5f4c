"""The training's curves: table nodes for the loss and the validation error, the chart that plots them, and
rows appended as the events come.
"""

import slicer
import vtk
from slicer.i18n import tr as _

__all__ = ["appendRow", "number", "progressNodes", "showChart"]


def number(value) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def appendRow(tableNode, values) -> None:
    """Append a row of numbers to a table node (nothing if there is no table)."""
    if tableNode is None:
        return
    table = tableNode.GetTable()
    row = table.GetNumberOfRows()
    table.InsertNextBlankRow()
    for column, value in enumerate(values):
        table.SetValue(row, column, vtk.vtkVariant(number(value)))
    table.Modified()
    tableNode.Modified()


def _table(scene, tableName, columns):
    """The table node called ``tableName`` (created if missing), emptied, with these double columns."""
    node = scene.GetFirstNodeByName(tableName)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", tableName)
    node.RemoveAllColumns()
    for column in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        node.AddColumn(array)
    return node


def progressNodes(scene, name="XVR training"):
    """Table nodes for the loss and validation curves, and a chart plotting both (created once)."""
    progress = _table(scene, f"{name} loss", ["iteration", "loss", "ncc"])
    validation = _table(scene, f"{name} validation", ["iteration", "mtre_mm", "dgeo_mm"])
    chart = scene.GetFirstNodeByName(f"{name} chart")
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
        for tableNode, column, color in ((progress, "loss", (0.2, 0.4, 0.9)), (validation, "mtre_mm", (0.9, 0.3, 0.1))):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(tableNode.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetTitle(_("Training: loss and validation mTRE (mm)"))
        chart.SetXAxisTitle(_("iteration"))
    return progress, validation, chart


def showChart(chart) -> None:
    """Show the chart in the view layout (Slicer only)."""
    if chart is not None and hasattr(slicer, "modules") and hasattr(slicer.modules, "plots"):
        slicer.modules.plots.logic().ShowChartInLayout(chart)
