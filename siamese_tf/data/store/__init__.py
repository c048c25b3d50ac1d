"""The prepared store: a dataset on disk (or in a bucket) read by row id, never loaded.

`python -m launch.prepare --dataset=SPEC --out=DIR` writes it (`write_store`);
`--dataset=prepared:DIR` trains from it (`open_store`): the stateless samplers draw row ids as
they do for in-memory data, and only those rows are read, checked, decoded and augmented in the
input pipeline. Layout and checks: `siamese_tf.data.store.layout`.
"""

from siamese_tf.data.store.layout import StoreError, store_error_from
from siamese_tf.data.store.reader import RecordStore, StoreRows, open_store
from siamese_tf.data.store.writer import write_store

__all__ = [
    "RecordStore",
    "StoreError",
    "StoreRows",
    "open_store",
    "store_error_from",
    "write_store",
]
