# scripts/gen_embeddings.awk: generated embeddings CSVs for `make bench-batch` (BENCH_BATCH_EMBEDDINGS_ITEMS).
# awk -v seed=S -v clusters=K -v d=D -v noise=X -v n=N -v kind=items|users -f scripts/gen_embeddings.awk
# Writes id,embedding rows of d-dim unit vectors drawn around `clusters` random unit centres
# (centre + noise·N(0, I/d), normalised). kind=items: ids S10_<1000000+k>; kind=users: 1000+k.
function gauss(   u, v) { u = rand(); if (u < 1e-12) u = 1e-12; v = rand(); return sqrt(-2 * log(u)) * cos(6.283185307179586 * v) }
BEGIN {
  srand(seed)
  for (c = 0; c < clusters; c++) { s = 0; for (i = 0; i < d; i++) { x = gauss(); C[c, i] = x; s += x * x } s = sqrt(s); for (i = 0; i < d; i++) C[c, i] /= s }
  print "id,embedding"
  for (k = 0; k < n; k++) {
    c = int(rand() * clusters); s = 0
    for (i = 0; i < d; i++) { x = C[c, i] + noise * gauss() / sqrt(d); V[i] = x; s += x * x }
    s = sqrt(s); line = (kind == "items" ? "S10_" (1000000 + k) : (1000 + k)) ",\"["
    for (i = 0; i < d; i++) line = line (i ? "," : "") sprintf("%.6g", V[i] / s)
    print line "]\""
  }
}
