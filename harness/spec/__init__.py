"""The matrix, from its YAML to the cases it expands to: the words every layer shares (vocabulary), the matrix
as plain data (model), reading and bounding the file (matrix_file, limits), validation against the installed
timm (matrix, with matrix_models and matrix_settings), trigger sets and the zoo sweep (triggers, zoo), the cases
(cases) and ``harness run --model`` (one_model). vocabulary, model, matrix_file and limits import neither torch
nor timm."""
