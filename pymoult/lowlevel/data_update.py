"""The original Pymoult's import path for updating data: classes, objects, local variables.

The code lives in modules named for each job, and this module re-exports their names so that
update scripts written for the original (``from pymoult.lowlevel.data_update import
redefineClass``) run unchanged:

- :mod:`~pymoult.lowlevel.class_update`: :func:`redefineClass` (classes and ``Enum`` classes
  updated in place, or replaced), ``addFieldToClass``, ``addMethodToClass``,
  ``generateMixinUser``, ``applyMixinToObject``;
- :mod:`~pymoult.lowlevel.object_conversion`: :func:`updateToClass` (one object converted),
  ``transform_all`` (a transformer run on many objects, atomically);
- :mod:`~pymoult.lowlevel.local_variables`: ``updateLocalVar``, ``updateLocalVarInThread``
  (local variables of frames running in other threads).

New code imports from those modules. The names imported ``as`` themselves were importable from
here, outside ``__all__``, before the split: they still are.
"""

from .class_update import AddEnumMember as AddEnumMember
from .class_update import (addFieldToClass, addMethodToClass, applyMixinToObject, generateMixinUser,
                           redefineClass)
from .class_update import updatable_in_place as updatable_in_place
from .local_variables import WriteLocal, updateLocalVar, updateLocalVarInThread
from .object_conversion import PROGRESS_BATCH as PROGRESS_BATCH
from .object_conversion import AttributeWrites, Conversion, SetClass, transform_all, updateToClass
from .object_conversion import snapshot_entry as snapshot_entry

__all__ = [
    "redefineClass",
    "updateToClass",
    "addFieldToClass",
    "addMethodToClass",
    "generateMixinUser",
    "applyMixinToObject",
    "updateLocalVar",
    "updateLocalVarInThread",
    "transform_all",
    "SetClass",
    "AttributeWrites",
    "Conversion",
    "WriteLocal",
]
