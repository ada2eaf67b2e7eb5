"""Task ids, defined once for models, data and reports.

0 = general / unlabelled, 1 = salient object, 2 = entity, 3 = part. Datasets may declare more
ids; a model knows the ids it was built with.
"""

GENERAL, SALIENT, ENTITY, PART = 0, 1, 2, 3
TASK_NAMES: dict[int, str] = {GENERAL: "general", SALIENT: "salient", ENTITY: "entity", PART: "part"}
DEFAULT_TASKS: tuple[int, ...] = tuple(TASK_NAMES)
