"""Writing embeddings: rows in place into an ``.npy`` of the final shape, or carried columns +
``emb_0 .. emb_{D-1}`` appended to Parquet (row groups, optionally GeoParquet) or CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..geo import wrap_longitude
from .geoparquet import COLUMN as GEOMETRY
from .geoparquet import BBox, geo_metadata, wkb_points

OUTPUT_FORMATS = (".npy", ".parquet", ".csv")


class NpyWriter:
    """Writes rows in place into an ``.npy`` created with the final shape (``open_memmap``), through a plain file handle."""

    def __init__(self, path: Path, rows: int, *, dim: int, dtype: np.dtype) -> None:
        created = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, dim))
        self.offset, self.row_bytes = created.offset, dim * np.dtype(dtype).itemsize
        del created
        self.dtype = np.dtype(dtype)
        self.file = open(path, "r+b")

    def write(self, start: int, emb: np.ndarray, *, carried: Any, lonlat: np.ndarray | None = None) -> None:
        self.file.seek(self.offset + start * self.row_bytes)
        self.file.write(np.ascontiguousarray(emb, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()


class TableWriter:
    """Appends carried columns + ``emb_*`` columns to a Parquet file (row groups) or a CSV file.

    ``geoparquet`` (Parquet only) adds a WKB ``geometry`` point column and GeoParquet ``geo``
    metadata (:mod:`.geoparquet`) after the carried columns.
    """

    def __init__(self, path: Path, fmt: str, *, dim: int, geoparquet: bool = False) -> None:
        self.path, self.fmt, self.dim = path, fmt, dim
        self.names = [f"emb_{i}" for i in range(dim)]
        self.writer: Any = None
        self.schema: Any = None
        self.bbox = BBox() if geoparquet else None

    def _table(self, emb: np.ndarray, carried: Any, *, lonlat: np.ndarray | None) -> Any:
        import pyarrow as pa

        table = carried if carried is not None else pa.table({})
        names = self.names if self.bbox is None else [GEOMETRY, *self.names]
        clash = sorted(set(table.column_names) & set(names))
        if clash:
            raise ValueError(f"input columns {clash} clash with the output columns ({', '.join(names[:2])}, ..., emb_{self.dim - 1})")
        arrays = [pa.array(emb[:, i]) for i in range(self.dim)]
        if self.bbox is not None:
            if lonlat is None:
                raise ValueError("--geoparquet needs the coordinates of each chunk")
            lonlat = np.stack([wrap_longitude(torch.from_numpy(lonlat[:, 0])).numpy(), lonlat[:, 1]], axis=1)
            self.bbox.update(lonlat)
            arrays.insert(0, wkb_points(lonlat))
        return pa.Table.from_arrays([*table.columns, *arrays], names=[*table.column_names, *names])

    def write(self, start: int, emb: np.ndarray, *, carried: Any, lonlat: np.ndarray | None = None) -> None:
        table = self._table(emb, carried, lonlat=lonlat)
        if self.writer is None:
            self.schema = table.schema
            if self.fmt == ".parquet":
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(self.path, table.schema)
            else:
                import pyarrow.csv as pacsv

                self.writer = pacsv.CSVWriter(self.path, table.schema)
        elif not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            if self.bbox is not None:
                self.writer.add_key_value_metadata({"geo": json.dumps(geo_metadata(self.bbox.value()))})
            self.writer.close()


def open_writer(path: Path, fmt: str, *, rows: int, dim: int, dtype: np.dtype, geoparquet: bool = False) -> NpyWriter | TableWriter:
    """The writer of format ``fmt`` (an :data:`OUTPUT_FORMATS` suffix) for ``rows`` x ``dim`` embeddings at ``path``."""
    if fmt == ".npy":
        return NpyWriter(path, rows, dim=dim, dtype=dtype)
    return TableWriter(path, fmt, dim=dim, geoparquet=geoparquet)


__all__ = ["OUTPUT_FORMATS", "NpyWriter", "TableWriter", "open_writer"]
