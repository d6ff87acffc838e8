-- Everything the extension owns, one line per property, sorted: test/lib/catalog.sh diffs this
-- between an updated and a freshly installed database. Objects are named, never numbered (no oids),
-- so two databases compare; columns are listed by position among the live columns, so a column
-- added at another place than a fresh install puts it shows as a difference.
WITH ext AS (SELECT * FROM pg_extension WHERE extname = 'nps_billing'),
m AS (SELECT classid, objid FROM pg_depend
      WHERE refclassid = 'pg_extension'::regclass AND refobjid = (SELECT oid FROM ext) AND deptype = 'e'),
rel AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = 'nps_billing'::regnamespace),
fn AS (SELECT p.* FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace),
ty AS (SELECT t.* FROM pg_type t WHERE t.typnamespace = 'nps_billing'::regnamespace)
SELECT line FROM (
  SELECT 'member: ' || pg_describe_object(classid, objid, 0) AS line FROM m
  UNION ALL
  SELECT 'not a member, in the schema: ' || pg_describe_object(x.classid, x.objid, 0)
  FROM (SELECT 'pg_class'::regclass AS classid, oid AS objid FROM rel WHERE relkind NOT IN ('i', 't')
        UNION ALL SELECT 'pg_proc'::regclass, oid FROM fn
        UNION ALL SELECT 'pg_type'::regclass, oid FROM ty WHERE typrelid = 0 AND typcategory <> 'A') x
  WHERE NOT EXISTS (SELECT 1 FROM m WHERE m.classid = x.classid AND m.objid = x.objid)
  UNION ALL
  SELECT format('extension: version %s relocatable %s schema %s owner %s', extversion, extrelocatable,
                extnamespace::regnamespace, pg_get_userbyid(extowner)) FROM ext
  UNION ALL
  SELECT format('extension config dump: %s %L', c::regclass, cond)
  FROM ext, unnest(extconfig, extcondition) AS u(c, cond)
  UNION ALL
  SELECT format('schema: %s owner %s acl %s comment %L', nspname, pg_get_userbyid(nspowner), nspacl,
                obj_description(oid, 'pg_namespace'))
  FROM pg_namespace WHERE nspname = 'nps_billing'
  UNION ALL
  SELECT format('relation: %s kind %s persistence %s owner %s options %s acl %s rls %s/%s replica %s comment %L',
                oid::regclass, relkind, relpersistence, pg_get_userbyid(relowner), reloptions, relacl,
                relrowsecurity, relforcerowsecurity, relreplident, obj_description(oid, 'pg_class'))
  FROM rel WHERE relkind <> 't'
  UNION ALL
  SELECT format('column: %s #%s %s %s%s default %s identity %L generated %L collation %s acl %s options %s comment %L',
                a.attrelid::regclass,
                lpad((row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum))::text, 3, '0'), a.attname,
                format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                CASE WHEN a.attcollation <> 0 THEN (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END,
                a.attacl,
                -- (some builds keep a private per-column version here; it is not part of the schema)
                array(SELECT o FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_attver=%'), col_description(a.attrelid, a.attnum))
  FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE rel.relkind <> 't'
  UNION ALL
  SELECT format('view: %s %s', oid::regclass, pg_get_viewdef(oid, true)) FROM rel WHERE relkind IN ('v', 'm')
  UNION ALL
  SELECT format('sequence: %s %s start %s inc %s min %s max %s cache %s cycle %s owned by %s',
                s.seqrelid::regclass, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
                s.seqmax, s.seqcache, s.seqcycle,
                (SELECT d.refobjid::regclass || '.' || a.attname FROM pg_depend d
                 JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i')
                   AND d.refclassid = 'pg_class'::regclass))
  FROM pg_sequence s JOIN rel ON rel.oid = s.seqrelid
  UNION ALL
  SELECT format('index: %s %s comment %L', indexrelid::regclass, pg_get_indexdef(indexrelid),
                obj_description(indexrelid, 'pg_class'))
  FROM pg_index i JOIN rel ON rel.oid = i.indrelid
  UNION ALL
  SELECT format('constraint: %s %s %s deferrable %s/%s valid %s comment %L',
                coalesce(conrelid::regclass::text, contypid::regtype::text), conname, pg_get_constraintdef(c.oid),
                condeferrable, condeferred, convalidated, obj_description(c.oid, 'pg_constraint'))
  FROM pg_constraint c WHERE connamespace = 'nps_billing'::regnamespace
  UNION ALL
  SELECT format('trigger: %s enabled %s comment %L', pg_get_triggerdef(t.oid), tgenabled,
                obj_description(t.oid, 'pg_trigger'))
  FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('policy: %s %s %s %s roles %s using %s check %s', polrelid::regclass, polname, polcmd, polpermissive,
                polroles::regrole[], pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
  FROM pg_policy p JOIN rel ON rel.oid = p.polrelid
  UNION ALL
  SELECT format('rule: %s %s', rulename, pg_get_ruledef(r.oid, true)) FROM pg_rewrite r JOIN rel ON rel.oid = r.ev_class
  WHERE rel.relkind NOT IN ('v', 'm')
  UNION ALL
  SELECT format('function: %s(%s) returns %s kind %s volatile %s parallel %s strict %s secdef %s leakproof %s cost %s rows %s config %s owner %s acl %s lang %s src-md5 %s bin %s support %s comment %L',
                p.oid::regproc, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), prokind,
                provolatile, proparallel, proisstrict, prosecdef, proleakproof, procost, prorows, proconfig,
                pg_get_userbyid(proowner), proacl, (SELECT lanname FROM pg_language WHERE oid = prolang),
                md5(prosrc), probin, prosupport, obj_description(p.oid, 'pg_proc'))
  FROM fn p
  UNION ALL
  SELECT format('function source: %s %s', p.oid::regprocedure, pg_get_functiondef(p.oid)) FROM fn p WHERE prokind <> 'a'
  UNION ALL
  SELECT format('aggregate: %s kind %s direct %s trans %s final %s combine %s serial %s deserial %s mtrans %s minv %s mfinal %s extra %s/%s modify %s/%s sortop %s stype %s space %s mstype %s mspace %s init %L minit %L',
                aggfnoid::regprocedure, aggkind, aggnumdirectargs, aggtransfn::regprocedure, aggfinalfn::regprocedure,
                aggcombinefn::regprocedure, aggserialfn::regprocedure, aggdeserialfn::regprocedure,
                aggmtransfn::regprocedure, aggminvtransfn::regprocedure, aggmfinalfn::regprocedure,
                aggfinalextra, aggmfinalextra, aggfinalmodify, aggmfinalmodify, aggsortop::regoperator,
                aggtranstype::regtype, aggtransspace, aggmtranstype::regtype, aggmtransspace, agginitval, aggminitval)
  FROM pg_aggregate a JOIN fn ON fn.oid = a.aggfnoid
  UNION ALL
  SELECT format('type: %s type %s len %s byval %s category %s preferred %s delim %s in %s out %s recv %s send %s modin %s modout %s analyze %s subscript %s align %s storage %s notnull %s base %s typmod %s default %L collation %s owner %s acl %s comment %L',
                t.oid::regtype, typtype, typlen, typbyval, typcategory, typispreferred, typdelim, typinput::regproc,
                typoutput::regproc, typreceive::regproc, typsend::regproc, typmodin::regproc, typmodout::regproc,
                typanalyze::regproc, typsubscript::regproc, typalign, typstorage, typnotnull,
                typbasetype::regtype, typtypmod, typdefault, typcollation, pg_get_userbyid(typowner), typacl,
                obj_description(t.oid, 'pg_type'))
  FROM ty t WHERE typrelid = 0 OR typtype = 'c'
  UNION ALL
  SELECT format('enum: %s %s', enumtypid::regtype, string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder))
  FROM pg_enum e JOIN ty ON ty.oid = e.enumtypid GROUP BY enumtypid
  UNION ALL
  SELECT format('operator: %s kind %s code %s commutator %s negator %s restrict %s join %s merges %s hashes %s owner %s comment %L',
                o.oid::regoperator, oprkind, oprcode::regprocedure, oprcom::regoperator, oprnegate::regoperator,
                oprrest::regprocedure, oprjoin::regprocedure, oprcanmerge, oprcanhash, pg_get_userbyid(oprowner),
                obj_description(o.oid, 'pg_operator'))
  FROM pg_operator o WHERE oprnamespace = 'nps_billing'::regnamespace
  UNION ALL
  SELECT format('cast: %s -> %s via %s context %s method %s', castsource::regtype, casttarget::regtype,
                castfunc::regprocedure, castcontext, castmethod)
  FROM pg_cast c JOIN m ON m.classid = 'pg_cast'::regclass AND m.objid = c.oid
  UNION ALL
  SELECT format('event trigger: %s on %s %s tags %s enabled %s', evtname, evtevent, evtfoid::regprocedure, evttags, evtenabled)
  FROM pg_event_trigger e JOIN m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
  UNION ALL
  SELECT format('opclass: %s %s family %s', opcname, (SELECT amname FROM pg_am WHERE oid = opcmethod), opcfamily)
  FROM pg_opclass WHERE opcnamespace = 'nps_billing'::regnamespace
  UNION ALL
  SELECT format('comment: %s %L', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
  FROM pg_description d JOIN m ON m.classid = d.classoid AND m.objid = d.objoid
  UNION ALL
  SELECT format('initial privileges: %s %s %s', pg_describe_object(i.classoid, i.objoid, i.objsubid), i.privtype, i.initprivs)
  FROM pg_init_privs i JOIN m ON m.classid = i.classoid AND m.objid = i.objoid
  UNION ALL
  SELECT format('default privileges: %s %s %s', pg_get_userbyid(defaclrole), defaclobjtype, defaclacl)
  FROM pg_default_acl WHERE defaclnamespace = 'nps_billing'::regnamespace
) x ORDER BY line COLLATE "C";
