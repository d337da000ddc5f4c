"""Slicer-side helpers shared by the XVR modules (the ``xvrcore`` package itself stays Slicer-free).

One module per kind of thing the panels handle in the MRML scene:

* :mod:`~XVRCoreLib.volumes` — volume nodes ↔ :class:`xvrcore.volume.Volume`, world matrices,
  segmentations ↔ label maps, label-name tables;
* :mod:`~XVRCoreLib.xray_plane` — the X-ray on its detector plane, the textured plane model, the beam;
* :mod:`~XVRCoreLib.xray_dicom` — an X-ray node written back as a DICOM (a scene registers without its files);
* :mod:`~XVRCoreLib.poses` — pose transform nodes, transform files;
* :mod:`~XVRCoreLib.views` — slice-view alignment and layers, outline images, colour tables;
* :mod:`~XVRCoreLib.markups` — landmarks from markups;
* :mod:`~XVRCoreLib.scene` — creating and reading nodes, ``XVR.*`` attributes and reference roles,
  ``.mrb`` bundles, module parameters;
* :mod:`~XVRCoreLib.vtkdata` — numpy ↔ VTK matrices and image data;
* :mod:`~XVRCoreLib.slicersupport` — dependency installation and the background worker's setup.

Every function takes the scene and the nodes explicitly (never ``slicer.mrmlScene``) and imports
``slicer`` and ``vtk`` inside the function, so all of this runs headless with the ``slicer-core``
wheel (the project's tests do exactly that). Nothing is re-exported here: the panels import
``XVRCoreLib.slicersupport`` before torch and the other dependencies are installed, and that import
must not pull in ``xvrcore`` (which the MRML modules import).
"""
