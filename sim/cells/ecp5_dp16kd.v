// Simulation model of the ECP5 DP16KD block RAM in the configurations Yosys' synth_ecp5 makes
// (share/lattice/brams_map_16kd.v): DATA_WIDTH 9 / 18 per port (true dual port) or 36 (pseudo dual
// port: A writes 36 bits from {DIB, DIA} with byte enables on ADA3..0, B reads them on {DOB, DOA};
// an 18-bit read of such a block comes out on DOB), REGMODE NOREG, CSDECODE 0b000 with the CS pins at
// 0, WRITEMODE NORMAL (a write keeps the port's output), WRITETHROUGH (it shows the new word) or
// READBEFOREWRITE (the old one); RESETMODE ASYNC/SYNC resets the output latches. Yosys 0.70's
// ecp5/cells_sim.v declares DP16KD with its parameters only (no behaviour), hence this file, used by
// sim/gate_level.py. Contents are 1024 rows of 18 bits, row r in INITVAL_(r/16) bits (r%16)*20 +: 18
// (Yosys' init_slice); a 9-bit word u is half u%2 of row u/2 (bits 0-8 for even u), an 18-bit word
// is row ADx[13:4] (byte enables ADx[1:0]), a 36-bit word q rows 2q (DIA/DOA) and 2q+1 (DIB/DOB).
// A configuration outside these stops the simulation. Read/write collisions between the ports read
// the old word (the model's; the block's are not specified).
module DP16KD(
  input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
  input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
  input CEA, OCEA, CLKA, WEA, RSTA,
  input CSA2, CSA1, CSA0,
  output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
  input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
  input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
  input CEB, OCEB, CLKB, WEB, RSTB,
  input CSB2, CSB1, CSB0,
  output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";
    parameter CLKAMUX = "CLKA";
    parameter CLKBMUX = "CLKB";
    parameter INIT_DATA = "STATIC";
    parameter INITVAL_00 = 320'h0;
    parameter INITVAL_01 = 320'h0;
    parameter INITVAL_02 = 320'h0;
    parameter INITVAL_03 = 320'h0;
    parameter INITVAL_04 = 320'h0;
    parameter INITVAL_05 = 320'h0;
    parameter INITVAL_06 = 320'h0;
    parameter INITVAL_07 = 320'h0;
    parameter INITVAL_08 = 320'h0;
    parameter INITVAL_09 = 320'h0;
    parameter INITVAL_0A = 320'h0;
    parameter INITVAL_0B = 320'h0;
    parameter INITVAL_0C = 320'h0;
    parameter INITVAL_0D = 320'h0;
    parameter INITVAL_0E = 320'h0;
    parameter INITVAL_0F = 320'h0;
    parameter INITVAL_10 = 320'h0;
    parameter INITVAL_11 = 320'h0;
    parameter INITVAL_12 = 320'h0;
    parameter INITVAL_13 = 320'h0;
    parameter INITVAL_14 = 320'h0;
    parameter INITVAL_15 = 320'h0;
    parameter INITVAL_16 = 320'h0;
    parameter INITVAL_17 = 320'h0;
    parameter INITVAL_18 = 320'h0;
    parameter INITVAL_19 = 320'h0;
    parameter INITVAL_1A = 320'h0;
    parameter INITVAL_1B = 320'h0;
    parameter INITVAL_1C = 320'h0;
    parameter INITVAL_1D = 320'h0;
    parameter INITVAL_1E = 320'h0;
    parameter INITVAL_1F = 320'h0;
    parameter INITVAL_20 = 320'h0;
    parameter INITVAL_21 = 320'h0;
    parameter INITVAL_22 = 320'h0;
    parameter INITVAL_23 = 320'h0;
    parameter INITVAL_24 = 320'h0;
    parameter INITVAL_25 = 320'h0;
    parameter INITVAL_26 = 320'h0;
    parameter INITVAL_27 = 320'h0;
    parameter INITVAL_28 = 320'h0;
    parameter INITVAL_29 = 320'h0;
    parameter INITVAL_2A = 320'h0;
    parameter INITVAL_2B = 320'h0;
    parameter INITVAL_2C = 320'h0;
    parameter INITVAL_2D = 320'h0;
    parameter INITVAL_2E = 320'h0;
    parameter INITVAL_2F = 320'h0;
    parameter INITVAL_30 = 320'h0;
    parameter INITVAL_31 = 320'h0;
    parameter INITVAL_32 = 320'h0;
    parameter INITVAL_33 = 320'h0;
    parameter INITVAL_34 = 320'h0;
    parameter INITVAL_35 = 320'h0;
    parameter INITVAL_36 = 320'h0;
    parameter INITVAL_37 = 320'h0;
    parameter INITVAL_38 = 320'h0;
    parameter INITVAL_39 = 320'h0;
    parameter INITVAL_3A = 320'h0;
    parameter INITVAL_3B = 320'h0;
    parameter INITVAL_3C = 320'h0;
    parameter INITVAL_3D = 320'h0;
    parameter INITVAL_3E = 320'h0;
    parameter INITVAL_3F = 320'h0;

    localparam [64*320-1:0] INITS = {INITVAL_3F, INITVAL_3E, INITVAL_3D, INITVAL_3C, INITVAL_3B, INITVAL_3A, INITVAL_39, INITVAL_38, INITVAL_37, INITVAL_36, INITVAL_35, INITVAL_34, INITVAL_33, INITVAL_32, INITVAL_31, INITVAL_30, INITVAL_2F, INITVAL_2E, INITVAL_2D, INITVAL_2C, INITVAL_2B, INITVAL_2A, INITVAL_29, INITVAL_28, INITVAL_27, INITVAL_26, INITVAL_25, INITVAL_24, INITVAL_23, INITVAL_22, INITVAL_21, INITVAL_20, INITVAL_1F, INITVAL_1E, INITVAL_1D, INITVAL_1C, INITVAL_1B, INITVAL_1A, INITVAL_19, INITVAL_18, INITVAL_17, INITVAL_16, INITVAL_15, INITVAL_14, INITVAL_13, INITVAL_12, INITVAL_11, INITVAL_10, INITVAL_0F, INITVAL_0E, INITVAL_0D, INITVAL_0C, INITVAL_0B, INITVAL_0A, INITVAL_09, INITVAL_08, INITVAL_07, INITVAL_06, INITVAL_05, INITVAL_04, INITVAL_03, INITVAL_02, INITVAL_01, INITVAL_00};
    reg [17:0] mem [0:1023];
    integer r;
    initial begin
        for (r = 0; r < 1024; r = r + 1)
            mem[r] = INITS[r*20 +: 18];
        if (REGMODE_A != "NOREG" || REGMODE_B != "NOREG" || CSDECODE_A != "0b000" || CSDECODE_B != "0b000" ||
            CLKAMUX != "CLKA" || CLKBMUX != "CLKB" ||
            !(DATA_WIDTH_A == 9 || DATA_WIDTH_A == 18 || DATA_WIDTH_A == 36) ||
            !(DATA_WIDTH_B == 9 || DATA_WIDTH_B == 18 || DATA_WIDTH_B == 36) ||
            ((DATA_WIDTH_A == 36) != (DATA_WIDTH_B == 36) && !(DATA_WIDTH_A == 36 && DATA_WIDTH_B == 18))) begin
            $display("DP16KD model: configuration not modelled");
            $finish;
        end
    end
    wire csa = {CSA2, CSA1, CSA0} == 3'b000, csb = {CSB2, CSB1, CSB0} == 3'b000;
    wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    wire pdp = DATA_WIDTH_A == 36;
    reg [17:0] doa = 0, dob = 0, doa_b = 0;  // (doa_b: DOA of the 36-bit read port)
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = DATA_WIDTH_B == 36 ? doa_b : doa;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;

    // port A: a 9/18-bit read-write port, or the 36-bit write port
    reg [17:0] olda, newa;
    always @(posedge CLKA, posedge RSTA) begin
        if (RSTA && RESETMODE == "ASYNC") doa <= 0;
        else if (RSTA && RESETMODE == "SYNC") doa <= 0;
        else if (CEA && csa) begin
            if (pdp) begin
                if (WEA) begin
                    if (ada[0]) mem[{ada[13:5], 1'b0}][8:0] <= dia[8:0];
                    if (ada[1]) mem[{ada[13:5], 1'b0}][17:9] <= dia[17:9];
                    if (ada[2]) mem[{ada[13:5], 1'b1}][8:0] <= dib[8:0];
                    if (ada[3]) mem[{ada[13:5], 1'b1}][17:9] <= dib[17:9];
                end
            end else if (DATA_WIDTH_A == 9) begin
                olda = ada[3] ? {9'd0, mem[ada[13:4]][17:9]} : {9'd0, mem[ada[13:4]][8:0]};
                if (WEA) begin
                    if (ada[3]) mem[ada[13:4]][17:9] <= dia[8:0]; else mem[ada[13:4]][8:0] <= dia[8:0];
                    doa <= WRITEMODE_A == "WRITETHROUGH" ? {9'd0, dia[8:0]} : WRITEMODE_A == "READBEFOREWRITE" ? olda : doa;
                end else doa <= olda;
            end else begin
                olda = mem[ada[13:4]];
                newa = {ada[1] ? dia[17:9] : olda[17:9], ada[0] ? dia[8:0] : olda[8:0]};
                if (WEA) begin
                    mem[ada[13:4]] <= newa;
                    doa <= WRITEMODE_A == "WRITETHROUGH" ? newa : WRITEMODE_A == "READBEFOREWRITE" ? olda : doa;
                end else doa <= olda;
            end
        end
    end

    // port B: a 9/18-bit read-write port, or the 36-bit read port (both output latches)
    reg [17:0] oldb, newb;
    always @(posedge CLKB, posedge RSTB) begin
        if (RSTB && RESETMODE == "ASYNC") begin
            dob <= 0;
            doa_b <= 0;
        end else if (RSTB && RESETMODE == "SYNC") begin
            dob <= 0;
            doa_b <= 0;
        end else if (CEB && csb) begin
            if (DATA_WIDTH_B == 36) begin
                doa_b <= mem[{adb[13:5], 1'b0}];
                dob <= mem[{adb[13:5], 1'b1}];
            end else if (pdp) begin  // an 18-bit read of a 36-bit written block: on DOB
                dob <= mem[adb[13:4]];
            end else if (DATA_WIDTH_B == 9) begin
                oldb = adb[3] ? {9'd0, mem[adb[13:4]][17:9]} : {9'd0, mem[adb[13:4]][8:0]};
                if (WEB) begin
                    if (adb[3]) mem[adb[13:4]][17:9] <= dib[8:0]; else mem[adb[13:4]][8:0] <= dib[8:0];
                    dob <= WRITEMODE_B == "WRITETHROUGH" ? {9'd0, dib[8:0]} : WRITEMODE_B == "READBEFOREWRITE" ? oldb : dob;
                end else dob <= oldb;
            end else begin
                oldb = mem[adb[13:4]];
                newb = {adb[1] ? dib[17:9] : oldb[17:9], adb[0] ? dib[8:0] : oldb[8:0]};
                if (WEB) begin
                    mem[adb[13:4]] <= newb;
                    dob <= WRITEMODE_B == "WRITETHROUGH" ? newb : WRITEMODE_B == "READBEFOREWRITE" ? oldb : dob;
                end else dob <= oldb;
            end
        end
    end
endmodule
