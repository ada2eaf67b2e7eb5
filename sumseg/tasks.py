"""Task ids, defined once for models, data and reports.

0 = general / unlabelled, 1 = salient object, 2 = entity, 3 = part. Datasets may declare more
ids; a model knows the ids it was built with.
"""

GENERAL, SALIENT, ENTITY, PART = 0, 1, 2, 3
TASK_NAMES: dict[int, str] = {GENERAL: "general", SALIENT: "salient", ENTITY: "entity", PART: "part"}
DEFAULT_TASKS: tuple[int, ...] = tuple(TASK_NAMES)

TASK_ID_LIMIT = 1024
"""Task ids read from files (annotations, checkpoint metadata) must be below this: an id sizes a
lookup table, so a hostile 3e9 must not reach one. 1024 tasks is far more than any dataset declares."""
