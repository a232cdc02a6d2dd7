"""The POS knowledge base: staff-edited YAML content, its schema, loader, store and builder.

`kb` imports neither `bot` nor `actions`; both of them read it.
"""
